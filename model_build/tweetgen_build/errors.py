"""Errors that reach a user of the model build as one line, with exit status 2."""


class InputError(Exception):
    """Bad user input (a missing file, an empty corpus, a wrong CSV...).

    The message is one line that names the file and the problem; the command line prints it
    without a traceback and exits with status 2.
    """
