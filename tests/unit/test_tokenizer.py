"""The shared tokenizer: deterministic, placeholders kept whole, tweets round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest
from tweetgen_build.data import load_corpus, split_corpus
from tweetgen_build.errors import InputError
from tweetgen_build.tokenizer import (
    EOS_ID,
    encode_tweets,
    load_tokenizer,
    tokenizer_sha256,
    train_tokenizer,
)


def _train_texts(sentiment140: Path) -> list[str]:
    corpus = load_corpus([sentiment140 / "sample_20k.csv"], max_tweets=4000)
    return split_corpus(corpus.texts).train


def test_same_texts_give_the_same_tokenizer(sentiment140: Path) -> None:
    texts = _train_texts(sentiment140)
    first = train_tokenizer(texts, vocab_size=1000)
    second = train_tokenizer(list(texts), vocab_size=1000)
    assert tokenizer_sha256(first) == tokenizer_sha256(second)
    assert first.get_vocab_size() == 1000  # the placeholders included


def test_tweets_round_trip_and_placeholders_stay_whole(sentiment140: Path) -> None:
    texts = _train_texts(sentiment140)
    tok = train_tokenizer(texts, vocab_size=1000)
    for text in texts[:500]:
        assert tok.decode(tok.encode(text).ids) == text
    ids = tok.encode("thanks <user> see <url>").ids
    assert tok.token_to_id("<user>") in ids and tok.token_to_id("<url>") in ids
    framed = encode_tweets(tok, ["hi there"])[0]
    assert framed[0] == EOS_ID and framed[-1] == EOS_ID and EOS_ID not in framed[1:-1]


def test_a_tweet_that_spells_the_end_token_keeps_its_characters(sentiment140: Path) -> None:
    tok = train_tokenizer(_train_texts(sentiment140), vocab_size=1000)
    text = "the end <|endoftext|> or not"
    framed = encode_tweets(tok, [text])[0]
    assert EOS_ID not in framed[1:-1]
    assert tok.decode(framed[1:-1]) == text


@pytest.mark.parametrize(
    "content", ["just a tweet\nanother one\n", '{"not": "a tokenizer"}', "", "\x00\x01"]
)
def test_a_file_that_is_no_tokenizer_is_one_line_naming_it(tmp_path: Path, content: str) -> None:
    path = tmp_path / "some\nthing.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_tokenizer(path)
    message = str(caught.value)
    assert "some\\nthing.txt: not a tokenizer JSON file" in message
    assert len(message.splitlines()) == 1


def test_a_saved_tokenizer_loads_back(tmp_path: Path) -> None:
    tokenizer = train_tokenizer(["hello there", "general kenobi"] * 20, vocab_size=300)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    assert tokenizer_sha256(load_tokenizer(tmp_path / "tokenizer.json")) == tokenizer_sha256(
        tokenizer
    )
