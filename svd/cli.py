"""Shared command-line behaviour: user errors end the program with one line, not a traceback."""
import sys

from svd.io.checkpoint import CheckpointError

# Problems with what the user gave (files, folders, values); anything else is a bug and keeps its traceback.
# FloatingPointError: sampling went non-finite (svd.sampling.diffusion.NonFiniteSampleError names the step and causes).
USER_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError,
               KeyError, CheckpointError, FloatingPointError)


def run_cli(main):
    try:
        main()
    except USER_ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        sys.exit(f"error: {message}")
