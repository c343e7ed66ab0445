"""The PyTorch side of ``gpt2_vs_pytorch``: Hugging Face transformers 5 ``generate`` on CPU.

Runs inside the separate ``.venv-bench-torch`` environment (transformers 5 and the project's
transformers 4 cannot share one) as a ``benchmarks.common.Worker``; it imports neither
TensorFlow nor the project.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import Any


def worker(
    config: dict[str, Any],
    prompts: dict[str, list[list[int]]],
    new_tokens: int,
    top_k: int,
    temperature: float,
    threads: int,
    seed: int,
) -> tuple[dict[str, Any], Callable[[dict[str, Any]], dict[str, Any]]]:
    """Build GPT-2 with random weights; each request times one ``generate`` of one batch."""
    import torch
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**config)).eval()
    inputs = {batch: torch.tensor(rows, dtype=torch.long) for batch, rows in prompts.items()}

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        input_ids = inputs[str(request["batch"])]
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                do_sample=True,
                top_k=top_k,
                top_p=1.0,
                temperature=temperature,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=config["eos_token_id"],
            )
        seconds = time.perf_counter() - start
        return {
            "seconds": seconds,
            "new_tokens": int(out.shape[1] - input_ids.shape[1]),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        }

    info = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "attn_implementation": str(model.config._attn_implementation),
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }
    return info, handle
