"""The ``agentbot`` command: ``ask`` (terminal mode), ``run`` (the Discord bot), ``sync``, ``doctor``."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer

from agent.config import ConfigError, load_agent_settings
from agent.logs import configure_logging

app = typer.Typer(add_completion=False, no_args_is_help=True, help="agentbot: research agents for Discord.")


@app.callback()
def _root() -> None:
    """agentbot: research agents for Discord, and in the terminal."""


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"agentbot: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def ask(
    task: Annotated[str, typer.Argument(help="What to research or do.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model spec, e.g. gpt-4o-mini.")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, max=100)] = None,
    show_text: Annotated[
        bool, typer.Option("--show-text", help="Stream the model's words while it writes.")
    ] = False,
) -> None:
    """Run one task in the terminal with every built-in tool; the answer goes to stdout."""
    try:
        settings = load_agent_settings()
    except ConfigError as e:
        _fail(str(e))
        return
    configure_logging(settings.log_level if settings.log_level != "INFO" else "WARNING", settings.log_format)
    from agent.ask import ask as run_ask

    try:
        result = asyncio.run(run_ask(task, settings, model=model, max_steps=max_steps, show_text=show_text))
    except ConfigError as e:
        _fail(str(e))
        return
    except KeyboardInterrupt:
        _fail("interrupted", 130)
        return
    if result.status == "error":
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
