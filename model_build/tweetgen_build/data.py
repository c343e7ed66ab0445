"""Tweet corpus: read the formats people have, clean, deduplicate, split deterministically.

Every input is streamed line by line (the 1.6M-row Sentiment140 file must not sit in memory
twice), and every decision that could depend on file order (which tweets survive
``max_tweets``, which split a tweet lands in, the order inside a split) depends on a hash of
the cleaned text instead, so the same data gives the same splits on every run and machine.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import html
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO, Literal

from tweetgen_build.errors import InputError, printable

__all__ = [
    "DEFAULT_FRACTIONS",
    "MOJIBAKE",
    "SENTIMENT140_COLUMNS",
    "URL_TOKEN",
    "USER_TOKEN",
    "CleaningOptions",
    "Corpus",
    "InputFormat",
    "SourceStats",
    "SplitFractions",
    "SplitName",
    "Splits",
    "clean_tweet",
    "detect_format",
    "load_corpus",
    "read_tweets",
    "split_corpus",
    "split_of",
]

URL_TOKEN = "<url>"
USER_TOKEN = "<user>"

# U+FFFD as the corpus stores it: its UTF-8 bytes read back as ISO-8859-1, then the bare
# character for inputs that were decoded correctly.
MOJIBAKE = ("\u00ef\u00bf\u00bd", "\ufffd")

SENTIMENT140_COLUMNS = ("target", "ids", "date", "flag", "user", "text")
_SENTIMENT140_TEXT = SENTIMENT140_COLUMNS.index("text")

# Trailing punctuation is left outside the URL: "see http://x.co/a." ends a sentence. A
# scheme may be glued to the word before it ("sunshinehttp://..."), which the corpus has.
_URL = re.compile(
    r"(?:(?:https?|ftp)://|\bwww\.)\S*?(?=[.,;:!?)\]}'\"]*(?:\s|$))",
    re.IGNORECASE,
)
# Twitter handles are ASCII; the lookbehind keeps e-mail addresses (me@example.com) intact.
# It follows the "@" so that the regex engine can search for that literal (several times faster).
_USER = re.compile(r"@(?<!\w@)[A-Za-z0-9_]+")

_BOM = b"\xef\xbb\xbf"
# The raw Sentiment140 layout is distributed in ISO-8859-1, and re-saved by editors and
# pandas in UTF-8. Each line is read as UTF-8 where it is valid UTF-8 (ISO-8859-1 text with
# accents almost never is), else as ISO-8859-1, which every byte string is.
Encoding = Literal["utf-8", "utf-8, else latin-1"]
_UTF8_OR_LATIN1: Encoding = "utf-8, else latin-1"
_SNIFF_BYTES = 64 * 1024
# Binary data without NUL bytes: text (UTF-8 or ISO-8859-1) has no control bytes but tab and
# line breaks, so a few percent of them at the start of a file mean it is not text at all. A
# stray escape character in a short text file is not enough (its message escapes it instead).
_BINARY_SNIFF_BYTES = 1024
_CONTROL_BYTES = frozenset(range(0x20)) - {0x09, 0x0A, 0x0B, 0x0C, 0x0D} | {0x7F}
_BINARY_SHARE = 0.03
_BINARY_MIN_CONTROLS = 8


class InputFormat(StrEnum):
    """How a file holds its tweets."""

    SENTIMENT140 = "sentiment140"
    """The distributed Sentiment140 CSV: 6 quoted columns, no header, ISO-8859-1 (or UTF-8)."""
    CSV = "csv"
    """A UTF-8 CSV whose header line names a ``text`` column (what pandas writes)."""
    LINES = "lines"
    """UTF-8 text, one tweet per line."""


@dataclass(frozen=True)
class CleaningOptions:
    """What :func:`clean_tweet` and :func:`load_corpus` do to each tweet.

    Whitespace is always collapsed to single spaces and empty tweets are always dropped:
    a line break inside a tweet would break the one-tweet-per-line files and the tokenizers.
    """

    unescape_html: bool = True
    """Turn ``&amp;``, ``&quot;``, ``&lt;`` ... back into characters; the corpus stores them escaped."""
    replace_urls: bool = True
    """Replace every URL by ``URL_TOKEN``: shortened links are noise a generator cannot learn."""
    replace_users: bool = True
    """Replace every @mention by ``USER_TOKEN``: handles are personal data and rarely repeat."""
    remove_mojibake: bool = True
    """Delete the corpus' broken replacement characters (``ï¿½`` and U+FFFD); nothing can restore them."""
    lowercase: bool = False
    """Lowercase the text; off because case carries tone in tweets (``NO WAY``)."""
    deduplicate: bool = True
    """Keep only the first of identical cleaned tweets: repeats (spam, retweets) would be memorised."""


def _url_token(match: re.Match[str]) -> str:
    """The token, set apart from a word it was glued to so that tokenizers see it whole."""
    start = match.start()
    glued = start > 0 and match.string[start - 1].isalnum()
    return f" {URL_TOKEN}" if glued else URL_TOKEN


def clean_tweet(text: str, options: CleaningOptions = CleaningOptions()) -> str:
    """The tweet as the models see it; an empty result means the tweet carries nothing."""
    if options.unescape_html:
        text = html.unescape(text)
    if options.remove_mojibake:
        for broken in MOJIBAKE:
            text = text.replace(broken, "")
    # The substring tests skip the regexes for the many tweets without a URL or a mention.
    if options.replace_urls and ("://" in text or "www." in text.lower()):
        text = _URL.sub(_url_token, text)
    if options.replace_users and "@" in text:
        text = _USER.sub(USER_TOKEN, text)
    if options.lowercase:
        text = text.lower()
    return " ".join(text.split())


def _describe(path: Path) -> str:
    """The path as one printable line, even if its name holds control characters."""
    return printable(str(path))


def _error(path: Path, problem: str) -> InputError:
    return InputError(f"{_describe(path)}: {problem}")


def _check_file(path: Path) -> None:
    """Fail early, before minutes of reading, on inputs that cannot be read at all."""
    if not path.exists():
        raise _error(path, "no such file")
    if path.is_dir():
        raise _error(path, "is a directory; pass the tweet files inside it")
    if not os.access(path, os.R_OK):
        raise _error(path, "cannot be read (permission denied)")


def _open(path: Path) -> BinaryIO:
    _check_file(path)
    try:
        return path.open("rb")
    except OSError as exc:
        raise _error(path, f"cannot be read ({exc.strerror or exc})") from None


def _first_row(first_line: bytes) -> list[str]:
    try:
        return next(csv.reader([first_line.decode("latin-1")]), [])
    except csv.Error:
        return []


def _is_sentiment140_row(row: list[str]) -> bool:
    """A row as the distributed Sentiment140 file has it: 6 fields, a numeric target and id.

    Tested before looking for a ``text`` header cell: a tweet that is just "text" must not
    turn the raw file into a header CSV.
    """
    return (
        len(row) == len(SENTIMENT140_COLUMNS)
        and row[0].strip().isdigit()
        and row[1].strip().isdigit()
    )


def _control_bytes(head: bytes) -> int:
    return sum(byte in _CONTROL_BYTES for byte in head[:_BINARY_SNIFF_BYTES])


def detect_format(path: str | os.PathLike[str]) -> InputFormat:
    """Guess a file's format from its first line (and its suffix for ``.txt`` and ``.csv``).

    A row of 6 fields starting with two numbers (the sentiment target and the tweet id) means
    the raw Sentiment140 file; otherwise a header with a ``text`` column means a pandas-style
    CSV. A ``.csv`` that is neither is taken as a header CSV (or, starting with a number, as
    Sentiment140) so that reading it says what is missing. Binary data is refused here: NUL
    bytes, or more than a few percent of control bytes in the first KiB.
    """
    path = Path(path)
    with _open(path) as handle:
        head = handle.read(_SNIFF_BYTES)
    nul = head.find(b"\0")
    if nul >= 0:
        raise _error(path, f"binary data, not tweets (NUL byte at byte offset {nul})")
    sniffed = min(len(head), _BINARY_SNIFF_BYTES)
    controls = _control_bytes(head)
    if controls >= _BINARY_MIN_CONTROLS and controls > _BINARY_SHARE * sniffed:
        raise _error(
            path,
            f"binary data, not tweets ({controls} control bytes in the first {sniffed} bytes)",
        )
    suffix = path.suffix.lower()
    if suffix == ".txt" or not head.strip():
        return InputFormat.LINES
    lines = head.removeprefix(_BOM).splitlines()
    row = _first_row(lines[0] if lines else b"")
    if _is_sentiment140_row(row):
        return InputFormat.SENTIMENT140
    if any(name.strip().lower() == "text" for name in row):
        return InputFormat.CSV
    starts_with_number = bool(row) and row[0].strip().isdigit()
    if suffix == ".csv":
        return InputFormat.SENTIMENT140 if starts_with_number else InputFormat.CSV
    if starts_with_number and len(row) == len(SENTIMENT140_COLUMNS):
        return InputFormat.SENTIMENT140
    return InputFormat.LINES


def _raw_lines(handle: BinaryIO) -> Iterator[bytes]:
    """The file's lines with their endings: ``\\n``, ``\\r\\n``, or a lone ``\\r`` (classic Mac OS).

    Iterating a binary file splits on ``\\n`` only; a chunk with a ``\\r`` before its end is
    split again, so a file saved with ``\\r`` line breaks is not one giant line.
    """
    for chunk in handle:
        body = chunk[:-2] if chunk.endswith(b"\r\n") else chunk
        if b"\r" in body:
            yield from chunk.splitlines(keepends=True)
        else:
            yield chunk


def _decode(line: bytes, encoding: Encoding) -> str:
    if encoding == "utf-8":
        return line.decode("utf-8")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("latin-1")


def _decoded_lines(path: Path, handle: BinaryIO, encoding: Encoding) -> Iterator[str]:
    """Decode line by line so that a bad byte is reported with its offset and line."""
    offset = 0
    for number, raw in enumerate(_raw_lines(handle), start=1):
        line = raw
        if number == 1 and raw.startswith(_BOM):
            line = raw[len(_BOM) :]
            offset += len(_BOM)
        nul = line.find(b"\0")
        if nul >= 0:
            raise _error(
                path,
                f"binary data, not tweets (NUL byte at byte offset {offset + nul}, line {number})",
            )
        try:
            yield _decode(line, encoding)
        except UnicodeDecodeError as exc:
            raise _error(
                path,
                f"not UTF-8 text (byte 0x{line[exc.start]:02x} at byte offset "
                f"{offset + exc.start}, line {number}); save it as UTF-8",
            ) from None
        offset += len(line)


def _csv_rows(path: Path, lines: Iterator[str]) -> Iterator[tuple[int, list[str]]]:
    """CSV records with the line each starts on; blank lines are not records."""
    reader = csv.reader(lines, strict=True)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _error(path, f"line {start}: malformed CSV ({exc})") from None
        if row:
            yield start, row


def _read_sentiment140(path: Path, handle: BinaryIO) -> Iterator[str]:
    expected = len(SENTIMENT140_COLUMNS)
    for line, row in _csv_rows(path, _decoded_lines(path, handle, _UTF8_OR_LATIN1)):
        if len(row) != expected:
            raise _error(
                path,
                f"line {line}: expected {expected} columns "
                f"({','.join(SENTIMENT140_COLUMNS)}), found {len(row)}",
            )
        yield row[_SENTIMENT140_TEXT]


def _read_csv(path: Path, handle: BinaryIO) -> Iterator[str]:
    rows = _csv_rows(path, _decoded_lines(path, handle, "utf-8"))
    header = next(rows, None)
    if header is None:
        return
    names = [name.strip().lower() for name in header[1]]
    if "text" not in names:
        shown = printable(", ".join(header[1])[:200])
        raise _error(path, f"the header line has no 'text' column (columns: {shown})")
    column = names.index("text")
    for line, row in rows:
        if len(row) != len(names):
            raise _error(
                path,
                f"line {line}: expected {len(names)} columns like the header, found {len(row)}",
            )
        yield row[column]


def _read_lines(path: Path, handle: BinaryIO) -> Iterator[str]:
    for line in _decoded_lines(path, handle, "utf-8"):
        yield line.rstrip("\r\n")


_READERS = {
    InputFormat.SENTIMENT140: _read_sentiment140,
    InputFormat.CSV: _read_csv,
    InputFormat.LINES: _read_lines,
}


def read_tweets(
    path: str | os.PathLike[str], input_format: InputFormat | None = None
) -> Iterator[str]:
    """The raw tweet texts of one file, streamed; ``input_format`` overrides detection."""
    source = Path(path)
    chosen = input_format or detect_format(source)
    with _open(source) as handle:
        yield from _READERS[InputFormat(chosen)](source, handle)


@dataclass(frozen=True)
class SourceStats:
    """What loading did to one input file; ``rows_read`` is the sum of the other four."""

    path: Path
    input_format: InputFormat
    rows_read: int
    empty_dropped: int
    duplicates_dropped: int
    limit_dropped: int
    kept: int

    def summary(self) -> str:
        """One line for a progress or summary log."""
        line = (
            f"{self.path.name} ({self.input_format}): {self.rows_read:,} read, "
            f"{self.empty_dropped:,} empty, {self.duplicates_dropped:,} duplicates"
        )
        if self.limit_dropped:
            line += f", {self.limit_dropped:,} over max_tweets"
        return f"{line}, {self.kept:,} kept"


@dataclass(frozen=True)
class Corpus:
    """Cleaned, deduplicated tweets (in the order first read) and what each source gave."""

    texts: tuple[str, ...]
    sources: tuple[SourceStats, ...]

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def rows_read(self) -> int:
        return sum(source.rows_read for source in self.sources)

    @property
    def empty_dropped(self) -> int:
        return sum(source.empty_dropped for source in self.sources)

    @property
    def duplicates_dropped(self) -> int:
        return sum(source.duplicates_dropped for source in self.sources)

    @property
    def limit_dropped(self) -> int:
        return sum(source.limit_dropped for source in self.sources)

    def summary(self) -> str:
        """One line over all sources."""
        return (
            f"{len(self.sources)} file(s): {self.rows_read:,} read, {self.empty_dropped:,} empty, "
            f"{self.duplicates_dropped:,} duplicates, {self.limit_dropped:,} over max_tweets, "
            f"{len(self.texts):,} kept"
        )


@dataclass
class _Counts:
    rows_read: int = 0
    empty_dropped: int = 0
    duplicates_dropped: int = 0
    limit_dropped: int = 0
    kept: int = 0


def _as_paths(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(paths, str | os.PathLike):
        return [Path(paths)]
    listed = [Path(path) for path in paths]
    if not listed:
        raise InputError("no input files given: name at least one tweet file")
    return listed


def _sample_key(text: str) -> bytes:
    """A hash unrelated to the split hash, or ``max_tweets`` would keep only training tweets."""
    return hashlib.sha256(b"tweetgen-sample\0" + text.encode("utf-8")).digest()


def load_corpus(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    options: CleaningOptions = CleaningOptions(),
    max_tweets: int | None = None,
    *,
    input_format: InputFormat | None = None,
) -> Corpus:
    """Read, clean and deduplicate every input into one corpus.

    ``max_tweets`` keeps the tweets with the smallest hash rather than the first ones read,
    so the same inputs in any order give the same tweets. ``input_format`` forces one format
    for every file instead of detecting it per file.
    """
    sources = _as_paths(paths)
    if max_tweets is not None and (isinstance(max_tweets, bool) or max_tweets < 1):
        raise InputError(f"max_tweets must be a positive number of tweets, got {max_tweets!r}")
    for source in sources:
        _check_file(source)
    formats = [input_format or detect_format(source) for source in sources]

    counts = [_Counts() for _ in sources]
    texts: list[str] = []
    origins: list[int] = []
    seen: set[str] = set()
    for index, (source, chosen) in enumerate(zip(sources, formats, strict=True)):
        count = counts[index]
        for raw in read_tweets(source, chosen):
            count.rows_read += 1
            text = clean_tweet(raw, options)
            if not text:
                count.empty_dropped += 1
            elif options.deduplicate and text in seen:
                count.duplicates_dropped += 1
            else:
                seen.add(text)
                texts.append(text)
                origins.append(index)

    if not texts:
        names = ", ".join(_describe(source) for source in sources)
        read = sum(count.rows_read for count in counts)
        raise InputError(f"{names}: no tweet left after cleaning ({read:,} rows read)")

    keep: Sequence[int] = range(len(texts))
    if max_tweets is not None and len(texts) > max_tweets:
        keep = sorted(heapq.nsmallest(max_tweets, keep, key=lambda i: _sample_key(texts[i])))
    kept_texts = [texts[i] for i in keep]
    for i in keep:
        counts[origins[i]].kept += 1
    for count, source_total in zip(counts, _per_source_totals(origins, len(sources)), strict=True):
        count.limit_dropped = source_total - count.kept

    stats = tuple(
        SourceStats(
            path=source,
            input_format=InputFormat(chosen),
            rows_read=count.rows_read,
            empty_dropped=count.empty_dropped,
            duplicates_dropped=count.duplicates_dropped,
            limit_dropped=count.limit_dropped,
            kept=count.kept,
        )
        for source, chosen, count in zip(sources, formats, counts, strict=True)
    )
    return Corpus(texts=tuple(kept_texts), sources=stats)


def _per_source_totals(origins: Sequence[int], sources: int) -> list[int]:
    totals = [0] * sources
    for origin in origins:
        totals[origin] += 1
    return totals


SplitName = Literal["train", "validation", "test"]


@dataclass(frozen=True)
class SplitFractions:
    """Shares of train / validation / test; each in [0, 1], summing to 1, train not empty."""

    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1

    def __post_init__(self) -> None:
        shares = (self.train, self.validation, self.test)
        if not all(isinstance(share, int | float) and math.isfinite(share) for share in shares):
            raise InputError(f"split fractions must be numbers, got {shares}")
        if any(share < 0 or share > 1 for share in shares):
            raise InputError(f"split fractions must each lie between 0 and 1, got {shares}")
        if not math.isclose(sum(shares), 1.0, abs_tol=1e-6):
            raise InputError(f"split fractions must add up to 1, got {shares} (sum {sum(shares)})")
        if self.train == 0:
            raise InputError("the train fraction must be above 0")


DEFAULT_FRACTIONS = SplitFractions()


def _split_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _split_from_key(key: bytes, fractions: SplitFractions) -> SplitName:
    # 8 bytes of the hash as a uniform number in [0, 1).
    position = int.from_bytes(key[:8], "big") / 2**64
    if position < fractions.train:
        return "train"
    if position < fractions.train + fractions.validation:
        return "validation"
    return "test"


def split_of(text: str, fractions: SplitFractions = DEFAULT_FRACTIONS) -> SplitName:
    """The split a cleaned tweet belongs to; it depends on nothing but the text."""
    return _split_from_key(_split_key(text), fractions)


@dataclass(frozen=True)
class Splits:
    """Train, validation and test tweets, each ordered by hash so input order cannot leak in."""

    train: list[str] = field(default_factory=list)
    validation: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        """sha256 hex over the three splits: equal fingerprints mean equal training data."""
        digest = hashlib.sha256()
        for name, texts in (
            ("train", self.train),
            ("validation", self.validation),
            ("test", self.test),
        ):
            digest.update(f"{name}\0{len(texts)}\0".encode())
            for text in texts:
                encoded = text.encode("utf-8")
                # Length prefixes keep ["ab", "c"] and ["a", "bc"] apart.
                digest.update(len(encoded).to_bytes(8, "big"))
                digest.update(encoded)
        return digest.hexdigest()


def split_corpus(texts: Iterable[str], fractions: SplitFractions = DEFAULT_FRACTIONS) -> Splits:
    """Assign every tweet by :func:`split_of`; the result does not depend on input order."""
    keyed = sorted((_split_key(text), text) for text in texts)
    splits = Splits()
    target: dict[SplitName, list[str]] = {
        "train": splits.train,
        "validation": splits.validation,
        "test": splits.test,
    }
    for key, text in keyed:
        target[_split_from_key(key, fractions)].append(text)
    return splits
