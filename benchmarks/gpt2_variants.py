"""Names of the GPT-2 decoding variants that ``gpt2_vs_pytorch --variants`` measures.

A variant joins parts with ``+``: model changes (``embed``, ``head``, ``static``, ``xla``: see
``benchmarks.gpt2_fast``) and runtime settings (``interop1``: one inter-op thread;
``onednn-off``: ``TF_ENABLE_ONEDNN_OPTS=0``). ``library`` alone is the library's module as it is.
Kept free of TensorFlow so that the parent process never imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

MODEL_PARTS = ("embed", "head", "xla", "static")
RUNTIME_PARTS = ("interop1", "onednn-off")


@dataclass(frozen=True)
class FastOptions:
    own_embedding: bool = False
    last_position_head: bool = False
    jit_step: bool = False
    static_cache: bool = False


def parts_of(variant: str) -> list[str]:
    parts = [p for p in variant.split("+") if p]
    unknown = sorted(set(parts) - set(MODEL_PARTS) - set(RUNTIME_PARTS) - {"library"})
    if unknown:
        raise ValueError(f"unknown variant parts {unknown}: use {MODEL_PARTS + RUNTIME_PARTS}")
    return parts


def options_of(variant: str) -> FastOptions:
    parts = parts_of(variant)
    return FastOptions(
        own_embedding="embed" in parts,
        last_position_head="head" in parts,
        jit_step="xla" in parts,
        static_cache="static" in parts,
    )


def needs_prototype(variant: str) -> bool:
    return any(part in MODEL_PARTS for part in parts_of(variant))


def runtime_env(variant: str) -> dict[str, str]:
    return {"TF_ENABLE_ONEDNN_OPTS": "0"} if "onednn-off" in parts_of(variant) else {}


def inter_op_threads(variant: str, default: int) -> int:
    return 1 if "interop1" in parts_of(variant) else default
