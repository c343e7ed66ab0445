"""Errors that reach a user of the model build as one line, without a traceback."""


class InputError(Exception):
    """Bad user input (a missing file, an empty corpus, a wrong CSV...).

    The message is one line that names the file and the problem; the command line prints it
    without a traceback and exits with status 2.
    """


class ServingMismatch(Exception):
    """An export that TensorFlow Serving would not run as training and evaluation did.

    The command line prints it as one line and exits with status 1; nothing is packaged.
    """


def error_line(exc: BaseException) -> str:
    """The first line of an error that says what went wrong.

    TensorFlow's Python session puts "Graph execution error:" before the runtime's own message,
    which is the line a model server's answer starts with.
    """
    lines = [line.strip() for line in str(exc).splitlines()]
    meaningful = [line for line in lines if line and line != "Graph execution error:"]
    return meaningful[0] if meaningful else repr(exc)
