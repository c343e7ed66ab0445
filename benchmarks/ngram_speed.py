"""Fit + score time of the Kneser-Ney baseline (tweetgen_build.ngram) against nltk's.

nltk's ``KneserNeyInterpolated`` rescans its n-gram tables for every score, so scoring the
whole evaluation set with it would take hours; it scores a sample of the evaluation
positions and its full time is extrapolated from that (marked as such). Ours fits on the
same data and scores every evaluation position. Both see the same n-grams: the ones ending
at predicted positions of the padded sequences, as `KneserNeyLM.fit` counts them.

Run from the repository root: ``python benchmarks/ngram_speed.py`` (about a minute).
Defaults: 1.5M training tokens, 100k evaluation tokens, 8,000 ids drawn from a Zipf law,
trigram model; ``--tweets FILE...`` uses whitespace tokens of real tweets instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
try:
    from tweetgen_build.ngram import KneserNeyLM
except ModuleNotFoundError:  # run as a plain script without the project installed
    sys.path.insert(0, str(REPO_ROOT / "model_build"))
    from tweetgen_build.ngram import KneserNeyLM

EOS = 0


def zipf_sequences(tokens: int, vocab_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Tweets of 5-25 ids drawn from a Zipf law (id 0 is eos): a realistic count profile."""
    sequences: list[list[int]] = []
    total = 0
    while total < tokens:
        length = int(rng.integers(5, 26))
        ids = np.minimum(rng.zipf(1.2, size=length), vocab_size - 1)
        sequences.append([EOS, *ids.tolist(), EOS])
        total += length + 1
    return sequences


def tweet_sequences(paths: list[Path], vocab_size: int) -> list[list[int]]:
    """Whitespace tokens of real tweets; the vocab_size - 2 most frequent words keep an id."""
    lines = [
        line.split() for path in paths for line in path.read_text(encoding="utf-8").splitlines()
    ]
    frequent = Counter(word for words in lines for word in words).most_common(vocab_size - 2)
    ids = {word: rank + 2 for rank, (word, _) in enumerate(frequent)}
    unknown = 1
    return [[EOS, *(ids.get(word, unknown) for word in words), EOS] for words in lines]


def split(sequences: list[list[int]], train_tokens: int) -> tuple[list[list[int]], list[list[int]]]:
    """The first sequences up to train_tokens predicted tokens train; the rest evaluate."""
    seen = 0
    for index, sequence in enumerate(sequences):
        seen += len(sequence) - 1
        if seen >= train_tokens:
            return sequences[: index + 1], sequences[index + 1 :]
    return sequences, []


def take_tokens(sequences: list[list[int]], tokens: int) -> list[list[int]]:
    taken: list[list[int]] = []
    seen = 0
    for sequence in sequences:
        if seen >= tokens:
            break
        taken.append(sequence)
        seen += len(sequence) - 1
    return taken


def predicted_ngrams(sequence: Sequence[int], order: int) -> Iterator[tuple[str, ...]]:
    """Every n-gram (lengths 1..order) ending at a predicted position, as nltk wants them."""
    padded = [str(t) for t in [sequence[0]] * max(order - 2, 0) + list(sequence)]
    for end in range(max(order - 1, 1), len(padded)):
        for length in range(1, order + 1):
            yield tuple(padded[end - length + 1 : end + 1])


def predicted_positions(
    sequences: list[list[int]], order: int
) -> Iterator[tuple[str, tuple[str, ...]]]:
    for sequence in sequences:
        padded = [str(t) for t in [sequence[0]] * max(order - 2, 0) + sequence]
        for end in range(max(order - 1, 1), len(padded)):
            yield padded[end], tuple(padded[end - order + 1 : end])


def time_nltk(
    train: list[list[int]], evaluation: list[list[int]], args: argparse.Namespace
) -> tuple[float, float]:
    """Seconds to fit nltk's model, and seconds per scored token on a sample."""
    from nltk.lm import KneserNeyInterpolated

    start = time.perf_counter()
    model = KneserNeyInterpolated(args.order, discount=args.discount)
    model.fit(
        (predicted_ngrams(sequence, args.order) for sequence in train),
        vocabulary_text=[str(i) for i in range(args.vocab_size)],
    )
    fit_s = time.perf_counter() - start
    sample = []
    for position in predicted_positions(evaluation, args.order):
        sample.append(position)
        if len(sample) == args.nltk_sample:
            break
    start = time.perf_counter()
    for token, context in sample:
        model.unmasked_score(token, context)
    per_token_s = (time.perf_counter() - start) / len(sample)
    return fit_s, per_token_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-tokens", type=int, default=1_500_000)
    parser.add_argument("--eval-tokens", type=int, default=100_000)
    parser.add_argument("--vocab-size", type=int, default=8_000)
    parser.add_argument("--order", type=int, default=3)
    parser.add_argument("--discount", type=float, default=0.75)
    parser.add_argument(
        "--nltk-sample", type=int, default=200, help="evaluation tokens nltk scores"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--tweets", type=Path, nargs="+", help="whitespace-tokenise these tweet files instead"
    )
    parser.add_argument("--skip-nltk", action="store_true")
    args = parser.parse_args()

    if args.tweets:
        train, rest = split(tweet_sequences(args.tweets, args.vocab_size), args.train_tokens)
        source = "tweets from " + ", ".join(str(path) for path in args.tweets)
    else:
        rng = np.random.default_rng(args.seed)
        train = zipf_sequences(args.train_tokens, args.vocab_size, rng)
        rest = zipf_sequences(args.eval_tokens, args.vocab_size, rng)
        source = f"Zipf(1.2) ids, seed {args.seed}"
    evaluation = take_tokens(rest, args.eval_tokens)
    train_n = sum(len(s) - 1 for s in train)
    eval_n = sum(len(s) - 1 for s in evaluation)
    if eval_n == 0:
        parser.error("no evaluation tokens left: lower --train-tokens")
    print(
        f"data: {source}; train {train_n:,} tokens ({len(train):,} sequences), "
        f"evaluate {eval_n:,} tokens; vocab {args.vocab_size:,}; order {args.order}; "
        f"discount {args.discount}"
    )

    start = time.perf_counter()
    ours = KneserNeyLM(args.order, args.discount, args.vocab_size).fit(train)
    ours_fit = time.perf_counter() - start
    start = time.perf_counter()
    perplexity = ours.perplexity(evaluation)
    ours_score = time.perf_counter() - start
    ours_total = ours_fit + ours_score
    print(
        f"ours: fit {ours_fit:.2f} s + score {ours_score:.2f} s = {ours_total:.2f} s "
        f"({ours_score / eval_n * 1e6:.1f} us/token); perplexity {perplexity:.2f}"
    )
    if args.skip_nltk:
        return
    nltk_fit, per_token = time_nltk(train, evaluation, args)
    nltk_total = nltk_fit + per_token * eval_n
    print(
        f"nltk: fit {nltk_fit:.2f} s + score {per_token * 1e3:.1f} ms/token x {eval_n:,} "
        f"(measured on {args.nltk_sample} tokens) = {nltk_total:,.0f} s extrapolated "
        f"(~{nltk_total / 3600:.1f} h)"
    )
    print(
        f"ratio nltk / ours (fit + score): {nltk_total / ours_total:,.0f}x; "
        f"fit alone {nltk_fit / ours_fit:.1f}x; per scored token "
        f"{per_token / (ours_score / eval_n):,.0f}x"
    )


if __name__ == "__main__":
    main()
