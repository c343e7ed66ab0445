"""Interpolated Kneser-Ney n-gram language model: the offline perplexity baseline.

The LSTM and GPT-2 generators are compared, per token of held-out text, against a smoothed
n-gram model trained on the same token ids. The smoothing is plain (one discount, not the
modified three-discount variant) interpolated Kneser-Ney with nltk's definition
(`nltk.lm.KneserNeyInterpolated`), so its numbers can be checked against nltk; unlike nltk,
every count is precomputed once in `fit` (nltk rescans its tables for each score, which
takes hours on a realistic evaluation set) and the unigram level is interpolated with a
uniform distribution over the vocabulary, so a token never seen in training keeps a finite
log-probability.

Conventions:

- A sequence is one tweet framed as ``[eos] + tokens + [eos]``. Every position after the
  first is predicted from the tokens before it in the same sequence; the first ``eos`` is
  the start context.
- So that the first predictions get a full-length context, a sequence is read with its
  first token repeated ``order - 2`` extra times in front (``[eos, eos, t1, ...]`` for a
  trigram model): the repeats say nothing more than "start of a tweet".
- Training counts exactly the n-grams (of every length up to ``order``) that end at a
  predicted position. N-grams made only of start padding are not counted: every counted
  lower-order n-gram then has a counted left extension, which keeps each level's
  distribution normalised (nltk's own ``pad_both_ends`` padding breaks that at the start).

For a context ``c`` (the last ``order - 1`` tokens) and a token ``w``, level by level from
the uniform distribution up::

    p_0(w)   = 1 / vocab_size
    p_k(w|c) = max(n_k(c w) - D, 0) / n_k(c .) + D * t_k(c) / n_k(c .) * p_{k-1}(w|c')

where ``c'`` drops the oldest token of ``c``, ``n_k`` is the raw count at the top level
(``k == order``) and the continuation count (how many distinct tokens precede the n-gram)
below it, ``n_k(c .)`` sums ``n_k`` over the tokens that follow ``c`` and ``t_k(c)`` is how
many distinct tokens follow ``c``. A context never seen at a level passes the lower level
through unchanged, as in nltk. A unigram model (``order == 1``) therefore uses raw counts,
where nltk's class, whose unigram level always counts continuations, cannot be fitted.
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from collections.abc import Iterable, Sequence

NGram = tuple[int, ...]

_context_of = operator.itemgetter(slice(None, -1))
_suffix_of = operator.itemgetter(slice(1, None))


class KneserNeyLM:
    """Interpolated Kneser-Ney language model over integer token ids.

    ``vocab_size`` bounds the token ids (``0 <= id < vocab_size``) and sets the uniform
    distribution at the bottom of the interpolation; left as ``None`` it becomes the largest
    id seen in `fit` plus one.
    """

    def __init__(
        self, order: int = 3, discount: float = 0.75, vocab_size: int | None = None
    ) -> None:
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"order must be an integer >= 1 (1 = unigram), got {order!r}")
        if isinstance(discount, bool) or not isinstance(discount, int | float):
            raise ValueError(
                f"discount must be a number strictly between 0 and 1, got {discount!r}"
            )
        if not 0.0 < discount < 1.0:
            raise ValueError(
                f"discount must be strictly between 0 and 1, got {discount!r}: 0 leaves unseen "
                "tokens no probability and 1 or more gives negative probabilities"
            )
        if vocab_size is not None and (
            isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1
        ):
            raise ValueError(f"vocab_size must be a positive integer or None, got {vocab_size!r}")
        self.order = order
        self.discount = float(discount)
        self.vocab_size = vocab_size
        self._requested_vocab_size = vocab_size
        # Index k holds level k (n-grams of length k); index 0 stays empty.
        self._ngram_counts: list[dict[NGram, int]] = []
        # Per level: context -> (n_k(c .), D * t_k(c) / n_k(c .)).
        self._contexts: list[dict[NGram, tuple[int, float]]] = []
        self._uniform = 0.0

    # -- training -------------------------------------------------------------------------

    def fit(self, sequences: Iterable[Sequence[int]]) -> KneserNeyLM:
        """Count every n-gram ending at a predicted position, then derive each level's tables.

        Refitting starts from scratch. Sequences shorter than two tokens predict nothing and
        are skipped.
        """
        order = self.order
        # For a unigram model the first token is never predicted, so it is never counted.
        first_end = 1 if order == 1 else 0
        top: Counter[NGram] = Counter()
        largest = -1
        for sequence in sequences:
            tokens = self._checked_tokens(sequence, "training sequence", self._requested_vocab_size)
            if len(tokens) < 2:
                continue
            largest = max(largest, *tokens)
            padded = self._padded(tokens)
            top.update(zip(*(padded[first_end + i :] for i in range(order)), strict=False))
        if not top:
            raise ValueError(
                "nothing to learn from: every training sequence has fewer than 2 tokens "
                "(frame each tweet as [eos] + tokens + [eos])"
            )
        vocab_size = self._requested_vocab_size or largest + 1
        self.vocab_size = vocab_size
        self._uniform = 1.0 / vocab_size

        counts: list[dict[NGram, int]] = [{} for _ in range(order + 1)]
        counts[order] = top
        # Every lower-order n-gram ends where a counted top-level one ends, so the distinct
        # n-grams of length k + 1 are exactly the suffixes of the distinct top-level ones.
        distinct: Iterable[NGram] = top.keys()
        for k in range(order - 1, 0, -1):
            continuation = Counter(map(_suffix_of, distinct))
            counts[k] = continuation
            distinct = continuation.keys()
        self._ngram_counts = counts
        self._contexts = [{}] + [self._context_table(counts[k]) for k in range(1, order + 1)]
        return self

    def _context_table(self, counts: dict[NGram, int]) -> dict[NGram, tuple[int, float]]:
        """Totals and interpolation weights per context, computed as nltk computes them."""
        followers = Counter(map(_context_of, counts))
        totals: dict[NGram, int] = {}
        get = totals.get
        for ngram, count in counts.items():
            context = ngram[:-1]
            totals[context] = get(context, 0) + count
        discount = self.discount
        return {
            context: (total, discount * followers[context] / total)
            for context, total in totals.items()
        }

    # -- scoring --------------------------------------------------------------------------

    def log_prob(self, token: int, context: Sequence[int]) -> float:
        """Natural log of p(token | context).

        ``context`` is the tokens before ``token`` in its sequence: all of them from the
        sequence's first token, or at least the last ``order - 1``. A shorter, non-empty
        context is taken as the start of a sequence and padded as in `fit`, so that
        ``log_prob(seq[i], seq[:i])`` is term ``i`` of `sequence_log_prob`. An empty context
        gives the unigram level's distribution.
        """
        vocab_size = self._fitted_vocab_size()
        token = _token_id(token, vocab_size, "token")
        tail = list(context[-self.order + 1 :]) if self.order > 1 else []
        checked = [_token_id(t, vocab_size, "context token") for t in tail]
        if checked and len(checked) < self.order - 1:
            checked = [checked[0]] * (self.order - 1 - len(checked)) + checked
        return math.log(self._probability(token, tuple(checked)))

    def sequence_log_prob(self, sequence: Sequence[int]) -> tuple[float, int]:
        """Sum of the natural log-probabilities of positions 1.. and how many there are."""
        vocab_size = self._fitted_vocab_size()
        tokens = self._checked_tokens(sequence, "sequence", vocab_size)
        if len(tokens) < 2:
            return 0.0, 0
        padded = self._padded(tokens)
        width = self.order - 1
        total = 0.0
        for end in range(len(padded) - len(tokens) + 1, len(padded)):
            context = tuple(padded[end - width : end]) if width else ()
            total += math.log(self._probability(padded[end], context))
        return total, len(tokens) - 1

    def perplexity(self, sequences: Iterable[Sequence[int]]) -> float:
        """exp of the mean negative log-probability per predicted token, over all sequences."""
        total = 0.0
        predicted = 0
        for sequence in sequences:
            log_prob, count = self.sequence_log_prob(sequence)
            total += log_prob
            predicted += count
        if predicted == 0:
            raise ValueError(
                "perplexity needs at least one predicted token: every sequence has fewer than 2 tokens"
            )
        return math.exp(-total / predicted)

    def _probability(self, token: int, context: NGram) -> float:
        """Interpolate from the uniform distribution up to the full context (validated input)."""
        probability = self._uniform
        discount = self.discount
        ngram = (*context, token)
        length = len(ngram)
        for k in range(1, length + 1):
            stats = self._contexts[k].get(ngram[length - k : length - 1])
            if stats is None:
                continue
            total, gamma = stats
            count = self._ngram_counts[k].get(ngram[length - k :], 0)
            probability = max(count - discount, 0.0) / total + gamma * probability
        return probability

    # -- helpers --------------------------------------------------------------------------

    def _padded(self, tokens: list[int]) -> list[int]:
        """Repeat the start token so the first predicted positions get a full-length context."""
        return [tokens[0]] * max(self.order - 2, 0) + tokens

    def _fitted_vocab_size(self) -> int:
        if not self._ngram_counts or self.vocab_size is None:
            raise RuntimeError("the n-gram model is not fitted yet: call fit(sequences) first")
        return self.vocab_size

    @staticmethod
    def _checked_tokens(sequence: Sequence[int], what: str, limit: int | None) -> list[int]:
        try:
            tokens = list(map(operator.index, sequence))
        except TypeError as error:
            raise ValueError(f"{what} must hold integer token ids: {error}") from None
        if tokens and (min(tokens) < 0 or (limit is not None and max(tokens) >= limit)):
            bad = next(t for t in tokens if t < 0 or (limit is not None and t >= limit))
            raise ValueError(_range_message(what, bad, limit))
        return tokens


def _token_id(token: int, vocab_size: int, what: str) -> int:
    try:
        value = operator.index(token)
    except TypeError:
        raise ValueError(f"{what} must be an integer token id, got {token!r}") from None
    if not 0 <= value < vocab_size:
        raise ValueError(_range_message(what, value, vocab_size))
    return value


def _range_message(what: str, token: int, vocab_size: int | None) -> str:
    bound = f"between 0 and vocab_size - 1 = {vocab_size - 1}" if vocab_size else ">= 0"
    return f"{what} has token id {token}, but ids must be {bound}; use the tokenizer's ids"
