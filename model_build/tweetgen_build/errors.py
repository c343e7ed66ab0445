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
