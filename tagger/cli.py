"""The `tagger` command line: thin Typer commands that call the library and render with Rich.

The application, its error boundary and shared options are in `tagger.cli_app`; the commands, one
module per group, in `tagger.commands` (importing them registers them, in the order `tagger
--help` lists them).

This module itself imports almost nothing: Typer, Rich and NumPy take about 0.3 s to import, and
`main` imports them inside its Ctrl-C handling, so an interrupt at any moment of start-up ends as
every later one does (one line, exit 130) rather than in a traceback. `from tagger.cli import app`
still works: the application is loaded on first use.
"""

from __future__ import annotations

import signal
import sys

from tagger.errors import EXIT_INTERRUPTED, INTERRUPTED

__all__ = ["app", "main"]


def __getattr__(name: str):
    if name == "app":
        return _application()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _application():
    """The Typer application with every command registered."""
    from tagger.cli_app import app
    from tagger.commands import scanning, reading, features  # noqa: F401, I001 - registers the commands, in this order

    return app


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM (kill, systemd, a batch scheduler) stops a scan as Ctrl-C does


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, _terminated)
    try:
        _application()()
    except KeyboardInterrupt:  # during the imports or Typer's set-up: the commands catch their own
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not break the line
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
