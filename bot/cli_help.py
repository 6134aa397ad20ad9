"""Help that reads cleanly: typer's rich help prints a type after every parameter, so each flag,
``--help`` and ``--version`` too, read ``<bool>``, as if it took a value (``--show-text true`` then
failed on "extra argument"), and the rest ``<str>``, ``<int range>``, ``<path>``.

The decisions: an option that takes a value names it (``--model MODEL``, ``--max-steps N``); a flag
shows nothing after it (``metavar=""``, which this module gives the help option as well); an argument
is named in the usage line (``[TASK]``) and explained in its command's help, as typer gives no way to
show an argument without a type. Each command's first help paragraph is one line, as the command list
shows it with its line breaks kept. A wrong option or argument is one line pointing to the help, and
every command ends on an error the same way: one line on stderr and an exit code from ``EXIT_CODES``."""

from __future__ import annotations

import contextlib
import re
import shlex
from collections.abc import Iterator
from typing import Any, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup

from agent.config import AgentSettings, ConfigError, load_agent_settings

EXIT_OK, EXIT_FAILED, EXIT_SETTINGS, EXIT_STEP_LIMIT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_READER_GONE = 141  # 128 + SIGPIPE, what `yes | head -1` leaves for `yes`
EXIT_CODES = (  # one paragraph: help keeps line breaks as written, so this wraps to the terminal's width
    "Exit codes: 0 answered; 1 the run failed (the provider or Discord refused or could not be "
    "reached); 2 a setting or option is wrong (the message names it); 3 `ask` stopped at the step limit "
    "(--max-steps / AGENT_MAX_STEPS; its partial answer is still printed); 130 interrupted; 141 the "
    "reader of `ask`'s output stopped reading (`| head -1`)."
)


def fail(message: str, code: int = EXIT_SETTINGS) -> NoReturn:
    """The one way a command ends on an error: one line on stderr, a non-zero exit."""
    typer.echo(f"agentbot: {' '.join(message.split())}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def failing(*errors: type[Exception], code: int = EXIT_SETTINGS) -> Iterator[None]:
    """Inside it, any of ``errors`` ends the command through :func:`_fail` (its message as is)."""
    try:
        yield
    except errors as e:
        fail(str(e), code)


def agent_settings() -> AgentSettings:
    with failing(ConfigError):
        settings = load_agent_settings()
    return settings


FLAG = ""
"""The metavar of a flag: nothing after its name."""


class _FlagHelp:
    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            option.metavar = FLAG
        return option


class Command(_FlagHelp, TyperCommand):
    """A command whose ``--help`` reads as a flag."""


class Group(_FlagHelp, TyperGroup):
    """The command group, likewise."""


# click's UsageError and ClickException, wherever this typer takes click from (0.29 vendors its own copy).
USAGE_ERROR: type[Exception] = typer.BadParameter.__mro__[1]
CLICK_ERROR: type[Exception] = USAGE_ERROR.__mro__[1]


def usage_line(e: Exception, argv: list[str]) -> str:
    """A usage error as one line, like a wrong setting, with where to look."""
    ctx = getattr(e, "ctx", None)
    # The parser's errors (`-m` with no value) come without a context: the command is argv's first.
    path = ctx.command_path if ctx is not None else " ".join(["agentbot", *argv[1:2]])
    where = f" (see `{path} --help`)"
    name = getattr(e, "option_name", None)
    if type(e).__name__ == "NoSuchOption" and name and not name.startswith("--"):
        # `agentbot ask "-5 degrees in F?"`: a task starting with "-" reads as options
        task = next((a for a in argv[1:] if a.startswith(name) and " " in a), None)
        if task is not None:
            where = f": a task starting with '-' goes after --, e.g. agentbot ask -- {shlex.quote(task)}"
    task = ctx.params.get("task") if ctx is not None and ctx.command.name == "ask" else None
    extra = re.fullmatch(r"Got unexpected extra argument(?:\(s\)|s)? \((.*)\)", e.format_message(), re.S)
    if isinstance(task, str) and extra:  # `agentbot ask What is 2+2?`: the shell split it into words
        # Not joined back: the shell has already expanded what it could (`*`, `?`, `~`) in the words.
        words = shlex.quote(f"{task} {extra[1]}")
        return f"the task is several arguments: quote it as one, e.g. agentbot ask {words}{where}"
    return f"{' '.join(e.format_message().split())}{where}"  # type: ignore[attr-defined]
