"""Help that reads cleanly: typer's rich help prints a type after every parameter, so each flag,
``--help`` and ``--version`` too, read ``<bool>``, as if it took a value (``--show-text true`` then
failed on "extra argument"), and the rest ``<str>``, ``<int range>``, ``<path>``.

The decisions: an option that takes a value names it (``--model MODEL``, ``--max-steps N``); a flag
shows nothing after it (``metavar=""``, which this module gives the help option as well); an argument
is named in the usage line (``[TASK]``) and explained in its command's help, as typer gives no way to
show an argument without a type. Each command's first help paragraph is one line, as the command list
shows it with its line breaks kept."""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand, TyperGroup

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
