"""Errors that reach a user of the model build as one line, without a traceback."""

import re
from pathlib import Path

# Characters that would break a message over lines or garble a terminal: C0 and C1 controls
# and the Unicode line and paragraph separators (str.splitlines breaks at each of them).
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """``text`` as one printable line: control characters and line breaks written as escapes.

    File names and file contents quoted in an :class:`InputError` go through it, so that a
    newline or a terminal escape inside them cannot split or garble the one-line message.
    """
    return _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text)


class InputError(Exception):
    """Bad user input (a missing file, an empty corpus, a wrong CSV...).

    The message is one line that names the file and the problem; the command line prints it
    without a traceback and exits with status 2.
    """


class ServingMismatch(Exception):
    """An export that TensorFlow Serving would not run as training and evaluation did.

    The command line prints it as one line and exits with status 1; nothing is packaged.
    """


def check_artifact_path(path: Path) -> None:
    """Refuse, in one line, a path that cannot be a ``model.tar.gz`` before anything reads it.

    ``validate-artifact`` and ``evaluate`` share it. A folder (an ``--unpacked`` tree, or the
    ``--out`` folder) is said to be one: "no such file" would send the user looking for a typo.
    """
    if path.is_dir():
        raise InputError(
            f"{printable(str(path))}: is a directory; a model.tar.gz is expected"
            " (tweetgen train --out DIR writes DIR/model.tar.gz)"
        )
    if not path.is_file():
        raise InputError(f"{printable(str(path))}: no such file")


def error_line(exc: BaseException) -> str:
    """The first line of an error that says what went wrong.

    TensorFlow's Python session puts "Graph execution error:" before the runtime's own message,
    which is the line a model server's answer starts with.
    """
    lines = [line.strip() for line in str(exc).splitlines()]
    meaningful = [line for line in lines if line and line != "Graph execution error:"]
    return meaningful[0] if meaningful else repr(exc)
