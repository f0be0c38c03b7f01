"""Shared command-line behaviour: user errors end the program with one line, not a traceback."""
import sys

from svd.checkpoint import CheckpointError

USER_ERRORS = (FileNotFoundError, ValueError, KeyError, CheckpointError)


def run_cli(main):
    try:
        main()
    except USER_ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        sys.exit(f"error: {message}")
