"""How the model build's command line ends a command that fails."""

from __future__ import annotations

import argparse

import pytest
from tweetgen_build.cli import Command, run
from tweetgen_build.errors import InputError, ServingMismatch


def _failing(exc: Exception) -> Command:
    def command(args: argparse.Namespace) -> int:
        raise exc

    return command


@pytest.mark.parametrize(
    ("exc", "status", "line"),
    [
        (InputError("data.csv: no such file"), 2, "tweetgen: error: data.csv: no such file"),
        (
            ServingMismatch("the SavedModel in out/model/1 does not run"),
            1,
            "tweetgen: error: the SavedModel in out/model/1 does not run; nothing was packaged",
        ),
    ],
)
def test_a_failed_command_ends_with_one_line_and_its_status(
    exc: Exception, status: int, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(_failing(exc), argparse.Namespace()) == status
    assert capsys.readouterr().err == line + "\n"
