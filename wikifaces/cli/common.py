"""What the command modules share: the app with its one error handler, options, config defaults."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from typer.core import TyperGroup

from wikifaces.core.errors import UserError

console = Console()
err = Console(stderr=True)


def one_line(exc: BaseException) -> str:
    """An expected failure as one line: what is wrong and, where the message says it, what to do."""
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(str(x) for x in e['loc']) or 'options'}: {e['msg']}" for e in exc.errors()]
        return "invalid options: " + "; ".join(parts)
    return " ".join(str(exc).split()) or type(exc).__name__


def _expected() -> tuple[type[BaseException], ...]:
    from shards import ShardError

    return (UserError, ShardError, ValidationError)


_UsageError = typer.BadParameter.__mro__[1]  # typer's (vendored) click.UsageError, whose subclass BadParameter is


class BadOption(UserError):
    """An option's value that the command itself refuses."""


class Commands(TyperGroup):
    """The one place where a user's mistake becomes one line `error: ...` and an exit code (2
    for bad options and usage, 1 otherwise). Anything else is a bug and keeps its traceback."""

    def get_command(self, ctx: Any, name: str) -> Any:
        """The command, its summary in the listing set to its docstring's first paragraph on one
        line: typer's rich listing keeps the docstring's line breaks, which the table then wraps."""
        command = super().get_command(ctx, name)
        if command is not None and command.short_help is None and command.help:
            command.short_help = " ".join(inspect.cleandoc(command.help).split("\n\n")[0].split())
        return command

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _UsageError as exc:  # typer's own: a missing argument, a value out of range
            command = f"{exc.ctx.command_path} --help" if exc.ctx is not None else "--help"
            typer.echo(f"error: {one_line(Exception(exc.format_message()))} (see {command})", err=True)
            raise typer.Exit(2) from None
        except _expected() as exc:
            typer.echo(f"error: {one_line(exc)}", err=True)
            raise typer.Exit(2 if isinstance(exc, ValidationError | BadOption) else 1) from None


app = typer.Typer(
    cls=Commands,
    help="Build face and LSUN datasets from Wikipedia and LMDB releases, and train DCGAN on them.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

RootOption = Annotated[
    Path | None,
    typer.Option("--root", help="Data root (default: $WIKIFACES_ROOT or ./data).", show_default=False),
]
ForceOption = Annotated[bool, typer.Option("--force", help="Rerun (and redo the work of) a stage even when unchanged.")]




def default(config: type[BaseModel], field: str) -> Any:
    """A config field's default: CLI options never write a default a second time."""
    return config.model_fields[field].default
