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
from typer.core import TyperCommand, TyperGroup

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
        except KeyboardInterrupt:  # else Click's "Aborted!" and exit 1
            raise _interrupted() from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _ClickUsageError as exc:
            raise _one_line(exc) from exc
        except KeyboardInterrupt:  # while a command's options are parsed, before its boundary
            raise _interrupted() from None


class _TaggerCommand(TyperCommand):
    """Help in the user's words: arguments and options by their placeholders (`PATH...`, `GLOB`,
    `SECONDS`), never Python's type names (`<list[str]>`, `{paths}...`), and "(repeatable)" on
    every option that may be given more than once."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                shown = _placeholder(param)
                pieces.append(shown if param.required else f"[{shown}]")
        return pieces

    def format_options(self, ctx, formatter) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                arguments.append((_placeholder(param), param.help or ""))
            elif (record := param.get_help_record(ctx)) is not None:
                name, text = record
                if getattr(param, "multiple", False) and "repeatable" not in text:
                    text = f"{text} (repeatable)"
                options.append((name, text))
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def _placeholder(argument) -> str:
    """An argument as help shows it: its metavar (else its name in capitals), with "..." when it
    takes many."""
    shown = argument.metavar or argument.name.upper()
    return shown if argument.nargs == 1 or shown.endswith("...") else f"{shown}..."


class _TaggerTyper(typer.Typer):
    """Every command registered on the app is a `_TaggerCommand`."""

    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or _TaggerCommand, **kwargs)


def _interrupted() -> typer.Exit:
    """Ctrl-C (or SIGTERM): the one line every interrupt gets, and exit 130."""
    err.print(errors.INTERRUPTED, markup=False, highlight=False)
    return typer.Exit(errors.EXIT_INTERRUPTED)


app = _TaggerTyper(
    cls=_TaggerGroup,
    help="Tag videos by content: scan folders, store per-segment tags, read them back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: "[env: TAGGER_DB; ...]" is text, not Rich markup that vanishes
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
_state = {"debug": False}

DbOption = Annotated[Optional[str], typer.Option("--db", metavar="PATH_OR_URL", help="SQLite file or SQLAlchemy URL [env: TAGGER_DB; default: user data dir]")]
ModelOption = Annotated[Optional[str], typer.Option("--model", metavar="PATH", help="Exported ONNX model [env: TAGGER_MODEL; default: shipped model]")]
DeviceOption = Annotated[str, typer.Option("--device", metavar="DEVICE", help="auto (CUDA when usable, else CPU), cpu or cuda")]
LabelOption = Annotated[Optional[list[str]], typer.Option("--label", "-l", metavar="LABEL", help="Only this label (repeatable)")]
MinScoreOption = Annotated[Optional[float], typer.Option("--min-score", metavar="SCORE", help="Only segments scoring at least this (0-1)")]
AudioModelOption = Annotated[Optional[str], typer.Option("--audio-model", metavar="PATH", help="Exported audio ONNX model [env: TAGGER_AUDIO_MODEL; default: the one the vision model names, or the shipped one with the shipped model]")]
PathOption = Annotated[Optional[str], typer.Option("--path", metavar="GLOB", help="Only videos whose path matches this glob or contains this text")]
HeadsOption = Annotated[Optional[str], typer.Option("--heads", metavar="DIR", help="Folder of add-on heads, the labels tagger learn taught [env: TAGGER_HEADS; default: heads/ in the user data dir]")]


class _WarningLines(logging.Handler):
    """The library's warnings (what discovery skipped, and why) as `warning: ...` lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(f"warning: {printable(record.getMessage())}", markup=False, highlight=False)


_library_log = logging.getLogger("tagger")
if not any(isinstance(h, _WarningLines) for h in _library_log.handlers):
    _library_log.addHandler(_WarningLines(logging.WARNING))


def debugging() -> bool:
    """Whether --debug was given: tracebacks, and the decoders' own words behind a failure."""
    return _state["debug"]


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
            raise _interrupted() from None
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            if _state["debug"]:
                traceback.print_exc()
            err.print(f"Error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                      markup=False, highlight=False)
            raise typer.Exit(errors.EXIT_UNEXPECTED) from None

    return wrapper


def _show_version(asked: bool) -> None:
    """`tagger --version`: tagger's version, onnxruntime's and the providers it offers here."""
    if not asked:
        return
    import onnxruntime

    from tagger import __version__
    from tagger.model import provider_names

    out.print(f"tagger {__version__}", markup=False, highlight=False)
    out.print(f"onnxruntime {onnxruntime.__version__} (providers: {provider_names(onnxruntime.get_available_providers())})",
              markup=False, highlight=False)
    raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and decoders' own words (anywhere on the line)")] = False,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_show_version,
                                          help="Show the version, onnxruntime's and its providers, and exit")] = False,
) -> None:
    """Tag videos by content: scan folders, store per-segment tags, read them back.

    Example: tagger scan ~/videos && tagger query --label PlayingGuitar
    """
    _state["debug"] = debug
