"""The Typer application every command registers on, its one error boundary and shared options.

One error boundary (`boundary`) turns every TaggerError into `Error: ...` on one line and its
exit code; `--debug`, anywhere on the command line, shows the traceback as well. The commands
themselves are in `tagger.commands`; `tagger.cli` is the entry point.
"""

from __future__ import annotations

import functools
import logging
import traceback
from typing import Annotated, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup

from tagger import errors
from tagger.escaping import printable


_ClickUsageError = typer.BadParameter.__mro__[1]  # click's UsageError (typer 0.29 vendors click)


class _OneLineUsageError(_ClickUsageError):
    """Click's usage errors (bad flag, bad value) as one `Error: ...` line, like every other error."""

    def show(self, file=None) -> None:
        hint = f" (see {self.ctx.command_path} --help)" if self.ctx is not None else ""
        typer.echo(f"Error: {self.format_message()}{hint}", file=file, err=file is None)


def _one_line(exc):
    if isinstance(exc, _OneLineUsageError) or type(exc).__name__ == "NoArgsIsHelpError":
        return exc  # NoArgsIsHelpError: a bare `tagger` shows the help, as asked
    return _OneLineUsageError(exc.format_message(), exc.ctx)


class _TaggerGroup(TyperGroup):
    """Accepts `--debug` anywhere before `--` (errors tell users to add it, wherever they are), and
    reports usage errors on one line with no usage block above them."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        end = args.index("--") if "--" in args else len(args)
        if "--debug" in args[:end]:
            args = ["--debug", *(a for a in args[:end] if a != "--debug"), *args[end:]]
        try:
            return super().parse_args(ctx, args)
        except _ClickUsageError as exc:
            raise _one_line(exc) from exc

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _ClickUsageError as exc:
            raise _one_line(exc) from exc


app = typer.Typer(
    cls=_TaggerGroup,
    help="Tag videos by content: scan folders, store per-segment tags, query them back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: "[env: TAGGER_DB; ...]" is text, not Rich markup that vanishes
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
_state = {"debug": False}

DbOption = Annotated[Optional[str], typer.Option("--db", help="SQLite file or SQLAlchemy URL [env: TAGGER_DB; default: user data dir]")]
ModelOption = Annotated[Optional[str], typer.Option("--model", help="Exported ONNX model [env: TAGGER_MODEL; default: shipped model]")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto (CUDA when usable, else CPU), cpu or cuda")]
LabelOption = Annotated[Optional[list[str]], typer.Option("--label", "-l", help="Only these labels (repeatable)")]
MinScoreOption = Annotated[Optional[float], typer.Option("--min-score", help="Only segments scoring at least this")]
AudioModelOption = Annotated[Optional[str], typer.Option("--audio-model", help="Exported audio ONNX model [env: TAGGER_AUDIO_MODEL; default: the one the vision model names, or the shipped one with the shipped model]")]
PathOption = Annotated[Optional[str], typer.Option("--path", help="Only videos whose path matches this glob or contains this text")]
HeadsOption = Annotated[Optional[str], typer.Option("--heads", help="Folder of add-on heads, the labels tagger learn taught [env: TAGGER_HEADS; default: heads/ in the user data dir]")]


class _WarningLines(logging.Handler):
    """The library's warnings (what discovery skipped, and why) as `warning: ...` lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(f"warning: {printable(record.getMessage())}", markup=False, highlight=False)


_library_log = logging.getLogger("tagger")
if not any(isinstance(h, _WarningLines) for h in _library_log.handlers):
    _library_log.addHandler(_WarningLines(logging.WARNING))


def boundary(command):
    """Run a command; map errors to one line on stderr and the documented exit codes."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except errors.TaggerError as exc:
            if _state["debug"]:
                traceback.print_exc()
            err.print(f"Error: {printable(str(exc))}", markup=False, highlight=False)  # one line, even for odd names
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("Interrupted: finished videos are stored; run the same scan again to resume.")
            raise typer.Exit(errors.EXIT_INTERRUPTED) from None
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            if _state["debug"]:
                traceback.print_exc()
            err.print(f"Error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                      markup=False, highlight=False)
            raise typer.Exit(errors.EXIT_UNEXPECTED) from None

    return wrapper


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors (accepted anywhere on the command line)")] = False) -> None:
    """Tag videos by content: scan folders, store per-segment tags, query them back.

    Example: tagger scan ~/videos && tagger query --label PlayingGuitar
    """
    _state["debug"] = debug
