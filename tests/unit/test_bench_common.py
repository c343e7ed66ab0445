"""The benchmarks' shared timing helper."""

from __future__ import annotations

from benchmarks.common import interleaved_runs


def test_interleaved_runs_time_callables_in_turns_and_spread_the_slow_baseline() -> None:
    calls: list[str] = []
    seconds = interleaved_runs(
        {"baseline": lambda: calls.append("baseline"), "ours": lambda: calls.append("ours")},
        repeats={"baseline": 2, "ours": 5},
        warmup={"baseline": 1, "ours": 2},
    )
    warm, timed = calls[:3], calls[3:]
    assert warm == ["baseline", "ours", "ours"]
    # One call of each per round; the baseline's two runs in rounds 0 and 2 of 5.
    assert timed == ["baseline", "ours", "ours", "baseline", "ours", "ours", "ours"]
    assert {name: len(values) for name, values in seconds.items()} == {"baseline": 2, "ours": 5}
    assert all(value >= 0 for values in seconds.values() for value in values)


def test_interleaved_runs_skip_a_callable_with_no_repeats() -> None:
    calls: list[str] = []
    seconds = interleaved_runs(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        repeats={"a": 3, "b": 0},
        warmup={},
    )
    assert calls == ["a", "a", "a"]
    assert seconds == {"a": seconds["a"], "b": []}
