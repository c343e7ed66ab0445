"""One byte-level BPE tokenizer per run, shared by both models so their perplexities compare."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from tweetgen_build.data import URL_TOKEN, USER_TOKEN
from tweetgen_build.errors import InputError, error_line, printable

EOS_TOKEN = "<|endoftext|>"
# The end-of-text token doubles as start-of-text and padding, as in GPT-2.
EOS_ID = 0
PLACEHOLDER_TOKENS = (URL_TOKEN, USER_TOKEN)
# Byte-level BPE starts from the 256 byte tokens; fewer leaves no room for any merge.
MIN_VOCAB_SIZE = 300


def train_tokenizer(
    texts: Iterable[str], *, vocab_size: int = 8000, min_frequency: int = 2
) -> Tokenizer:
    """Train a byte-level BPE tokenizer; the same texts always give the same tokenizer.

    ``vocab_size`` counts every token: the bytes, the merges, ``<|endoftext|>`` and the
    placeholders (fewer when the texts offer too few merges). A multiple of 16, like the
    default, lets the sampler use the vocabulary head as it is instead of a widened copy per
    request (``tweetgen_build.generation.sampling_head``).
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size must be at least {MIN_VOCAB_SIZE} (256 bytes + merges), got {vocab_size}"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(PLACEHOLDER_TOKENS),
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    # Placeholders stay whole and survive decoding (they are not "special").
    tokenizer.add_tokens(
        [AddedToken(t, single_word=False, normalized=False) for t in PLACEHOLDER_TOKENS]
    )
    if tokenizer.token_to_id(EOS_TOKEN) != EOS_ID:
        raise RuntimeError("the end-of-text token must have id 0")
    return tokenizer


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A saved ``tokenizer.json``; anything else is an :class:`InputError` naming the file.

    The tokenizers library raises a bare ``Exception`` for a file that is not tokenizer JSON,
    which would reach the user as a traceback.
    """
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:
        raise InputError(
            f"{printable(str(path))}: not a tokenizer JSON file ({printable(error_line(exc))});"
            " pass a tokenizer.json that tweetgen train wrote"
        ) from None


def tokenizer_sha256(tokenizer: Tokenizer) -> str:
    return hashlib.sha256(tokenizer.to_str().encode("utf-8")).hexdigest()


def eos_id_of(tokenizer: Tokenizer) -> int:
    """The end-of-text id: 0 in tokenizers trained here, 50256 in the original GPT-2's."""
    found = tokenizer.token_to_id(EOS_TOKEN)
    if found is None:
        raise ValueError(f"the tokenizer has no {EOS_TOKEN} token")
    return int(found)


def encode_tweets(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Frame each tweet as ``[eos] + tokens + [eos]`` (the form every model is trained and scored on).

    A tweet that spells ``<|endoftext|>`` gets the characters, not the token: only the frame
    marks where a tweet ends. The setting is not saved in tokenizer JSON, so it is set on
    the tokenizer here (as ``code/inference.py`` sets it on the one it loads).
    """
    tokenizer.encode_special_tokens = True
    eos = eos_id_of(tokenizer)
    return [[eos, *enc.ids, eos] for enc in tokenizer.encode_batch(texts)]
