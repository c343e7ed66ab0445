"""The experiment's metrics as time buckets: bucket arithmetic and latency percentiles.

Pure code: the database adapter computes the same bucket and latency bin in SQL, and these
functions are the reference it must agree with.

- **Buckets** are :data:`BUCKET_SECONDS` = 5 minutes of generation time (``created_at``),
  aligned on the Unix epoch. Five minutes keeps a month of two variants under 18,000 rows
  (a whole-experiment sum reads them in milliseconds) while a dashboard still sees a change
  within minutes. A generation's feedback and the requests that failed count in the bucket
  of the generation (or of the failure), whenever they arrive.
- **Latency percentiles** are read from a histogram with :data:`LATENCY_BINS_PER_E` bins per
  factor e of latency (bin ``floor(20 ln ms)``, each about 5.1 % wide), so SQL computes them
  in one grouped pass on MySQL 8, MariaDB and SQLite alike (none of them has a portable
  percentile function). The reported value is the bin's geometric middle: within 2.5 % of
  every latency in the bin. The percentile is the nearest rank: the smallest bin whose
  cumulative count reaches q x n.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

__all__ = [
    "BUCKET_SECONDS",
    "LATENCY_BINS_PER_E",
    "MIN_LATENCY_MS",
    "PERCENTILES",
    "POSITIVE_REWARD",
    "AggregationReport",
    "MetricTotals",
    "WeightsInForce",
    "bin_latency",
    "bucket_index",
    "bucket_ranges",
    "bucket_start",
    "iso",
    "latency_bin",
    "percentile_bin",
    "read_from",
]

BUCKET_SECONDS = 300
LATENCY_BINS_PER_E = 20
#: Latencies below this (a clock that did not move) fall in its bin.
MIN_LATENCY_MS = 0.001
#: The percentiles kept per bucket, as whole percents (integer arithmetic in SQL and here).
PERCENTILES = (50, 95)
#: Rewards at or above this count as positive (a like, or a rating of 3 and more).
POSITIVE_REWARD = 0.5

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def bucket_index(at: datetime, seconds: int = BUCKET_SECONDS) -> int:
    """The bucket of an aware instant: whole seconds since the epoch, divided by ``seconds``."""
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at.isoformat()}: buckets are of aware UTC instants")
    return math.floor((at - _EPOCH).total_seconds()) // seconds


def bucket_start(index: int, seconds: int = BUCKET_SECONDS) -> datetime:
    """The first instant of bucket ``index``."""
    return _EPOCH + timedelta(seconds=index * seconds)


def bucket_ranges(indices: Iterable[int]) -> list[tuple[int, int]]:
    """Bucket indices merged into runs of consecutive buckets, as (first, last) inclusive."""
    ranges: list[tuple[int, int]] = []
    for index in sorted(set(indices)):
        if ranges and index == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], index)
        else:
            ranges.append((index, index))
    return ranges


def latency_bin(latency_ms: float) -> int:
    """The histogram bin of a latency: ``floor(LATENCY_BINS_PER_E * ln(ms))``."""
    return math.floor(math.log(max(latency_ms, MIN_LATENCY_MS)) * LATENCY_BINS_PER_E)


def bin_latency(bin_: int) -> float:
    """The latency a bin stands for: its geometric middle, in milliseconds."""
    return math.exp((bin_ + 0.5) / LATENCY_BINS_PER_E)


def percentile_bin(counts: Mapping[int, int], percent: int) -> int | None:
    """The nearest-rank ``percent`` percentile of a histogram ``{bin: count}`` (None if empty).

    The smallest bin whose cumulative count c satisfies ``100 c >= percent n``.
    """
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    total = sum(counts.values())
    if total <= 0:
        return None
    cumulative = 0
    for bin_ in sorted(counts):
        cumulative += counts[bin_]
        if cumulative * 100 >= total * percent:
            return bin_
    return max(counts)


def read_from(watermark: datetime | None, overlap: timedelta) -> datetime | None:
    """Where an incremental run starts reading: rows recorded after ``watermark - overlap``.

    The overlap re-reads rows whose transaction committed after a later one had already been
    read (the watermark follows the newest ``recorded_at`` seen, and a row's time is taken
    before its transaction commits). None: read everything.
    """
    if overlap < timedelta(0):
        raise ValueError(f"the overlap cannot be negative, got {overlap}")
    return None if watermark is None else watermark - overlap


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True)
class AggregationReport:
    """What one aggregation run did.

    ``rows_read``: rows of each source read to find the buckets to recompute (in a full run,
    every row), plus ``attributed``: feedback that learnt its generation's bucket in this run.
    ``buckets``: (variant, bucket) pairs recomputed. The next run reads rows recorded after
    ``watermark`` minus the overlap.
    """

    mode: Literal["full", "incremental"]
    read_from: datetime | None
    watermark: datetime | None
    rows_read: dict[str, int]
    buckets: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "read_from": iso(self.read_from),
            "watermark": iso(self.watermark),
            "rows_read": dict(self.rows_read),
            "buckets": self.buckets,
            "seconds": round(self.seconds, 4),
        }


@dataclass(frozen=True)
class MetricTotals:
    """A variant's figures summed over its buckets.

    ``served`` counts requests routed to the variant, failed ones included; ``errors`` the
    failed ones; the feedback counts are of its generations.
    """

    served: int = 0
    feedback_count: int = 0
    positive_count: int = 0
    reward_sum: float = 0.0
    errors: int = 0


@dataclass(frozen=True)
class WeightsInForce:
    """The endpoint's weights as last seen, and since when they have been in force."""

    weights: dict[str, float]
    since: datetime
