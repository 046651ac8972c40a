"""The Typer application, its error mapping and shared console helpers."""
from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text
from typer.core import TyperGroup

from atss_bench.errors import AtssBenchError
from atss_bench.store import printable

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def shown(value: Any) -> str:
    """Record text for a Rich string: markup and terminal control characters shown literally
    (anything read from a results folder is data)."""
    return escape(printable(str(value), 1000))


def print_error(exc: AtssBenchError) -> None:
    """One line: the message (file, key, value) and a hint."""
    line = Text("error: ", style="bold red")
    line.append(exc.message)
    if exc.hint:
        line.append(f"  (hint: {exc.hint})", style="dim")
    err_console.print(line)


class _Group(TyperGroup):
    """Maps every AtssBenchError to one line and exit code 2 (a traceback only with --debug)."""

    def invoke(self, ctx: typer.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except AtssBenchError as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            print_error(exc)
            raise typer.Exit(2) from None


app = typer.Typer(
    cls=_Group,
    name="atss-bench",
    help="Reproduce and extend the ATSS paper's sample-selection experiments.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
)


@app.callback()
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    ctx.obj = {"debug": debug}
