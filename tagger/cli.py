"""The `tagger` command line: thin Typer commands that call the library and render with Rich.

The application, its error boundary and shared options are in `tagger.cli_app`; the commands, one
module per group, in `tagger.commands` (importing them registers them, in the order `tagger
--help` lists them).
"""

from __future__ import annotations

import signal

from tagger.cli_app import app
from tagger.commands import scanning, reading, features  # noqa: F401, I001 - registers the commands, in this order

__all__ = ["app", "main"]


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM (kill, systemd, a batch scheduler) stops a scan as Ctrl-C does


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, _terminated)
    app()


if __name__ == "__main__":
    main()
