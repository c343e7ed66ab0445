"""The Kneser-Ney perplexity baseline: normalisation, agreement with nltk, sanity anchors."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from typing import cast

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nltk.lm import KneserNeyInterpolated
from nltk.lm.models import InterpolatedLanguageModel
from nltk.lm.smoothing import KneserNey
from tweetgen_build.ngram import KneserNeyLM

EOS = 0
VOCAB = 15
# Ids 12..14 never occur in training: only the uniform floor gives them mass.
CORPUS = [
    [EOS, 1, 2, 3, EOS],
    [EOS, 1, 2, 4, 5, EOS],
    [EOS, 2, 3, 1, 2, 3, EOS],
    [EOS, 6, 7, EOS],
    [EOS, 1, 6, 7, 8, 9, EOS],
    [EOS, 10, 2, 3, 11, EOS],
    [EOS, EOS],
    [EOS, 4, 4, 4, 5, EOS],
]
HELD_OUT = [[EOS, 1, 2, 3, 4, EOS], [EOS, 6, 2, 9, 1, EOS], [EOS, 10, 11, 5, EOS]]


def next_token_mass(model: KneserNeyLM, context: Sequence[int]) -> float:
    assert model.vocab_size is not None
    return math.fsum(math.exp(model.log_prob(token, context)) for token in range(model.vocab_size))


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize(
    "context",
    [
        pytest.param([EOS, 1, 2], id="seen"),
        pytest.param([EOS, 1, 2, 3, 1, 2], id="seen-long"),
        pytest.param([EOS, 12, 13], id="unseen-tokens"),
        pytest.param([EOS, 3, 2, 1], id="unseen-ngram"),
        pytest.param([EOS], id="sequence-start"),
        pytest.param([7], id="short"),
        pytest.param([], id="empty"),
    ],
)
def test_next_token_probabilities_sum_to_one(order: int, context: list[int]) -> None:
    model = KneserNeyLM(order=order, discount=0.75, vocab_size=VOCAB).fit(CORPUS)
    assert next_token_mass(model, context) == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    order=st.integers(min_value=1, max_value=4),
    discount=st.floats(min_value=0.05, max_value=0.95),
    vocab_size=st.integers(min_value=2, max_value=12),
)
def test_probabilities_sum_to_one_for_random_corpora(
    data: st.DataObject, order: int, discount: float, vocab_size: int
) -> None:
    token = st.integers(min_value=0, max_value=vocab_size - 1)
    corpus = data.draw(st.lists(st.lists(token, min_size=2, max_size=8), min_size=1, max_size=8))
    context = data.draw(st.lists(token, max_size=order + 1))
    model = KneserNeyLM(order, discount, vocab_size).fit(corpus)
    assert next_token_mass(model, context) == pytest.approx(1.0, abs=1e-9)


class _KneserNeyOverUniform(KneserNey):
    """nltk's Kneser-Ney whose unigram level is interpolated with a uniform, as ours is.

    Only ``unigram_score`` changes: continuation counts, interpolation weights, the top level's
    raw counts and the pass-through for unseen contexts stay nltk's own code.
    """

    def __init__(
        self, vocabulary: object, counter: object, order: int, discount: float, vocab_size: int
    ) -> None:
        super().__init__(vocabulary, counter, order=order, discount=discount)
        self.vocab_size = vocab_size

    def unigram_score(self, word: str) -> float:
        continuations, bigram_types = self._continuation_counts(word)
        followers = {w for dist in self.counts[2].values() for w, c in dist.items() if c > 0}
        return (
            max(continuations - self.discount, 0.0) / bigram_types
            + self.discount * len(followers) / bigram_types / self.vocab_size
        )


def padded_strings(sequence: Sequence[int], order: int) -> list[str]:
    """The sequence as nltk sees it: strings, the first eos repeated order - 2 extra times."""
    return [str(t) for t in [sequence[0]] * max(order - 2, 0) + list(sequence)]


def predicted_ends(sequence: Sequence[int], order: int) -> range:
    """Indices, in the padded sequence, of the positions that are predicted (1.. originally)."""
    return range(max(order - 2, 0) + 1, len(sequence) + max(order - 2, 0))


def nltk_training_ngrams(sequence: Sequence[int], order: int) -> Iterator[tuple[str, ...]]:
    """Every n-gram of length 1..order that ends at a predicted position."""
    padded = padded_strings(sequence, order)
    for end in predicted_ends(sequence, order):
        for length in range(1, order + 1):
            yield tuple(padded[end - length + 1 : end + 1])


def nltk_model(
    order: int, discount: float, corpus: list[list[int]], uniform_floor: bool
) -> InterpolatedLanguageModel:
    """nltk's model fitted on exactly the n-grams that ours counts.

    Why not ``padded_everygram_pipeline``: its ``pad_both_ends`` also counts n-grams made only
    of padding, such as ``(<s>, <s>)``, which have no left neighbour, so the lower levels of
    its start contexts do not sum to one, and it pads the end too. The framing here already
    ends in eos, and the start is padded as ours pads it: the first eos repeated
    ``order - 2`` extra times, so the first token is predicted from a full-length context.
    """
    if uniform_floor:
        model = InterpolatedLanguageModel(
            _KneserNeyOverUniform,
            order,
            params={"order": order, "discount": discount, "vocab_size": VOCAB},
        )
    else:
        model = KneserNeyInterpolated(order, discount=discount)
    model.fit(
        (list(nltk_training_ngrams(sequence, order)) for sequence in corpus),
        vocabulary_text=[str(token) for token in range(VOCAB)],
    )
    return model


@pytest.mark.parametrize("order", [2, 3, 4])
@pytest.mark.parametrize("discount", [0.1, 0.75])
def test_agrees_with_nltk_kneser_ney(order: int, discount: float) -> None:
    """Every predicted position of the training text, and of held-out text, scores as nltk's.

    Alignment: nltk's vocabulary only looks up strings, so ids become strings;
    ``unmasked_score`` is called directly so nltk's ``<UNK>`` masking stays out of the way;
    nltk truncates the context to ``order - 1`` tokens itself and gets the same padded
    context ours builds from the sequence. nltk's unigram level has no uniform floor (a token
    never seen gets probability 0), so the nltk model here ends in the same floored unigram;
    `test_unigram_level_is_nltks_plus_the_uniform_floor` relates that level to plain nltk.
    """
    ours = KneserNeyLM(order, discount, VOCAB).fit(CORPUS)
    theirs = nltk_model(order, discount, CORPUS, uniform_floor=True)
    compared = 0
    for sequence in CORPUS + HELD_OUT:
        padded = padded_strings(sequence, order)
        shift = max(order - 2, 0)
        for end in predicted_ends(sequence, order):
            expected = theirs.unmasked_score(padded[end], tuple(padded[:end]))
            position = end - shift
            actual = ours.log_prob(sequence[position], sequence[:position])
            assert actual == pytest.approx(math.log(expected), abs=1e-9)
            compared += 1
    assert compared == sum(len(s) - 1 for s in CORPUS + HELD_OUT)


@pytest.mark.parametrize("order", [2, 3])
def test_unigram_level_is_nltks_plus_the_uniform_floor(order: int) -> None:
    """With D the discount, T the bigram types and n the distinct tokens they end in:

    ours(w) = (N1+(. w) - D) / T + D * n / (T * V) = nltk(w) + D / T * (n / V - 1)
    for every w seen after some token, since then N1+(. w) >= 1 > D.
    """
    discount = 0.75
    ours = KneserNeyLM(order, discount, VOCAB).fit(CORPUS)
    plain = nltk_model(order, discount, CORPUS, uniform_floor=False)
    bigrams = {(context, w) for context, dist in plain.counts[2].items() for w in dist}
    followers = {w for _, w in bigrams}
    shift = discount / len(bigrams) * (len(followers) / VOCAB - 1)
    for word in sorted(followers):
        expected = plain.unmasked_score(word) + shift
        assert math.exp(ours.log_prob(int(word), [])) == pytest.approx(expected, abs=1e-12)


def markov_tweets(count: int, seed: int, vocab_size: int = 30) -> list[list[int]]:
    """Tweets from a sparse first-order Markov chain: context helps, as it does in text."""
    chain = random.Random(1234)
    successors = {
        token: [*chain.sample(range(1, vocab_size), 3), EOS] for token in range(vocab_size)
    }
    rng = random.Random(seed)
    tweets = []
    for _ in range(count):
        tweet = [EOS]
        token = rng.choice(successors[EOS][:3])
        while token != EOS and len(tweet) < 20:
            tweet.append(token)
            token = rng.choices(successors[token], weights=[5, 3, 1, 1])[0]
        tweets.append([*tweet, EOS])
    return tweets


def test_uniform_anchor_has_perplexity_vocab_size() -> None:
    """An order-1 model that saw every id exactly once is uniform, so its perplexity is V.

    With c(w) = 1 for all V ids, N = V predicted tokens and n = V distinct ones:
    p(w) = (1 - D) / V + D * V / V * 1 / V = 1 / V, and exp(-(m * log(1 / V)) / m) = V.
    """
    vocab_size = 30
    uniform = KneserNeyLM(order=1, discount=0.6, vocab_size=vocab_size)
    uniform.fit([[EOS, *range(vocab_size)]])
    held_out = markov_tweets(50, seed=2, vocab_size=vocab_size)
    assert uniform.perplexity(held_out) == pytest.approx(vocab_size, rel=1e-12)


def test_fitted_model_beats_unigram_and_uniform_on_held_out_text() -> None:
    vocab_size = 30
    train = markov_tweets(2000, seed=1, vocab_size=vocab_size)
    held_out = markov_tweets(300, seed=2, vocab_size=vocab_size)
    unigram = KneserNeyLM(1, vocab_size=vocab_size).fit(train).perplexity(held_out)
    bigram = KneserNeyLM(2, vocab_size=vocab_size).fit(train).perplexity(held_out)
    trigram = KneserNeyLM(3, vocab_size=vocab_size).fit(train).perplexity(held_out)
    # The source has at most 4 successors per token: well-fitted context models come near 4.
    assert trigram < 5.0
    assert bigram < 5.0
    assert trigram < unigram < vocab_size


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_each_order_scores_sequences_consistently(order: int) -> None:
    model = KneserNeyLM(order, vocab_size=VOCAB).fit(CORPUS)
    for sequence in HELD_OUT:
        total, predicted = model.sequence_log_prob(sequence)
        assert predicted == len(sequence) - 1
        by_position = [model.log_prob(sequence[i], sequence[:i]) for i in range(1, len(sequence))]
        assert total == pytest.approx(math.fsum(by_position), abs=1e-12)
        assert all(math.isfinite(value) and value < 0 for value in by_position)
    scored = [model.sequence_log_prob(sequence) for sequence in HELD_OUT]
    expected = math.exp(-math.fsum(lp for lp, _ in scored) / sum(n for _, n in scored))
    assert model.perplexity(HELD_OUT) == pytest.approx(expected, rel=1e-12)


def test_context_beyond_the_order_is_ignored() -> None:
    model = KneserNeyLM(3, vocab_size=VOCAB).fit(CORPUS)
    assert model.log_prob(3, [EOS, 1, 2]) == model.log_prob(3, [9, 9, 1, 2])


def as_array(sequence: list[int]) -> Sequence[int]:
    """Token ids as a tokenizer hands them out: a numpy array of numpy integers."""
    return cast("Sequence[int]", np.array(sequence, dtype=np.int64))


def test_numpy_ids_and_short_sequences_are_accepted() -> None:
    model = KneserNeyLM(3, vocab_size=VOCAB).fit(as_array(s) for s in CORPUS)
    assert model.sequence_log_prob(as_array(HELD_OUT[0])) == model.sequence_log_prob(HELD_OUT[0])
    assert model.sequence_log_prob([EOS]) == (0.0, 0)


def test_vocab_size_defaults_to_the_largest_training_id_plus_one() -> None:
    model = KneserNeyLM(2).fit(CORPUS)
    assert model.vocab_size == 12
    assert next_token_mass(model, [EOS, 1]) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="vocab_size - 1 = 11"):
        model.log_prob(12, [EOS])
    # Refitting infers the size again rather than keeping the old one as a limit.
    assert KneserNeyLM(2).fit(CORPUS).fit([[EOS, 20, EOS]]).vocab_size == 21


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"order": 0}, "order must be an integer >= 1"),
        ({"order": -2}, "order must be an integer >= 1"),
        ({"order": 2.5}, "order must be an integer >= 1"),
        ({"discount": 0.0}, "strictly between 0 and 1"),
        ({"discount": 1.0}, "strictly between 0 and 1"),
        ({"discount": -0.1}, "strictly between 0 and 1"),
        ({"discount": 1.5}, "strictly between 0 and 1"),
        ({"discount": float("nan")}, "strictly between 0 and 1"),
        ({"discount": "0.5"}, "strictly between 0 and 1"),
        ({"vocab_size": 0}, "vocab_size must be a positive integer"),
    ],
)
def test_bad_constructor_arguments_raise_value_error(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        KneserNeyLM(**kwargs)  # type: ignore[arg-type]


def test_token_ids_outside_the_vocabulary_raise_value_error() -> None:
    model = KneserNeyLM(3, vocab_size=VOCAB).fit(CORPUS)
    bound = f"between 0 and vocab_size - 1 = {VOCAB - 1}"
    with pytest.raises(ValueError, match=f"token has token id 15, but ids must be {bound}"):
        model.log_prob(VOCAB, [EOS])
    with pytest.raises(ValueError, match="token has token id -1"):
        model.log_prob(-1, [EOS])
    with pytest.raises(ValueError, match="context token has token id 99"):
        model.log_prob(1, [EOS, 99])
    with pytest.raises(ValueError, match="sequence has token id 15"):
        model.sequence_log_prob([EOS, VOCAB, EOS])
    with pytest.raises(ValueError, match="sequence has token id 15"):
        model.perplexity([[EOS, 1, EOS], [EOS, VOCAB, EOS]])
    with pytest.raises(ValueError, match="training sequence has token id 15"):
        KneserNeyLM(3, vocab_size=VOCAB).fit([[EOS, VOCAB, EOS]])
    with pytest.raises(ValueError, match="integer token id"):
        model.log_prob(1.5, [EOS])  # type: ignore[arg-type]


def test_nothing_to_learn_or_score_raises_value_error() -> None:
    with pytest.raises(ValueError, match="fewer than 2 tokens"):
        KneserNeyLM().fit([[EOS], []])
    model = KneserNeyLM(vocab_size=VOCAB).fit(CORPUS)
    with pytest.raises(ValueError, match="at least one predicted token"):
        model.perplexity([[EOS]])


def test_scoring_before_fit_says_to_fit() -> None:
    with pytest.raises(RuntimeError, match="call fit"):
        KneserNeyLM().log_prob(1, [EOS])
