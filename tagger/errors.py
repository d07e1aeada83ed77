"""The TaggerError hierarchy: every error a user can cause, each with its exit code.

Exit codes (DESIGN.md): 0 ok, 1 unexpected, 2 usage, 3 some videos failed, 4 model missing or
invalid, 5 database unusable, 130 interrupted.
"""

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_VIDEOS_FAILED = 3
EXIT_MODEL = 4
EXIT_DATABASE = 5
EXIT_INTERRUPTED = 130


class TaggerError(Exception):
    """Base of every error the user can act on; the message is one line."""

    exit_code = EXIT_UNEXPECTED


class UsageError(TaggerError):
    """Bad flags or paths given on the command line."""

    exit_code = EXIT_USAGE


class ModelError(TaggerError):
    """The model file is missing, not ONNX, or breaks the tagger contract."""

    exit_code = EXIT_MODEL


class DatabaseError(TaggerError):
    """The database cannot be opened, written, or has an unknown schema."""

    exit_code = EXIT_DATABASE


class DecodeError(TaggerError):
    """A video could not be opened or read by any decoder."""

    exit_code = EXIT_VIDEOS_FAILED
