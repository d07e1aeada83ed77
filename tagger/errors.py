"""The TaggerError hierarchy: every error a user can cause, each with its exit code.

Exit codes (DESIGN.md): 0 ok, 1 unexpected, 2 usage, 3 some videos failed, 4 model missing or
invalid, 5 database unusable, 130 interrupted.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_VIDEOS_FAILED = 3
EXIT_MODEL = 4
EXIT_DATABASE = 5
EXIT_INTERRUPTED = 130
INTERRUPTED = "Interrupted: finished videos are stored; run the same scan again to resume."  # with exit 130


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


def check_range(option: str, value: float | None, low: float | None = None, high: float | None = None, *,
                above: bool = False, note: str = "") -> None:
    """Raise UsageError unless `low <= value <= high` (`low < value` with `above`); None passes.

    The message names the option, the valid range and the value given, e.g.
    "--batch-size must be between 0 and 4096 (0 = auto), got -3".
    """
    if value is None:
        return
    too_low = low is not None and (value <= low if above else value < low)
    too_high = high is not None and value > high
    if not (too_low or too_high or value != value):  # value != value: NaN
        return
    if low is not None and high is not None:
        allowed = f"between {low:g} and {high:g}"
    elif low is not None:
        allowed = f"greater than {low:g}" if above else f"at least {low:g}"
    else:
        allowed = f"at most {high:g}"
    raise UsageError(f"{option} must be {allowed}{note}, got {value:g}")


def check_choice(option: str, value: str | None, choices: tuple[str, ...]) -> None:
    """Raise UsageError unless `value` is None or one of `choices`."""
    if value is not None and value not in choices:
        raise UsageError(f"{option} {value!r} is not one of {', '.join(choices)}")
