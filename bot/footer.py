"""The footer a finished turn ends with: its sources, tokens, cost, models, time and how it ended.

Kept apart from :mod:`bot.progress` (which renders the steps) because it is a pure function of the
run's result, and the tests that check what a footer says about money read it alone.
"""

from __future__ import annotations

from agent.events import RunResult
from agent.tools.web_search import shown_url

__all__ = ["FOOTER_ROOM", "format_footer", "shown_source"]

FOOTER_ROOM = 1950
"""Discord's 2,000 characters, less the requester's ping the renderer puts into the footer."""


def shown_source(url: str) -> str:
    """A source as a thread shows it: a web address as ``<url>``, anything else as code. An MCP server's
    resource link may have any scheme, which pydantic leaves as sent: ``<x:> [claim](https://…) <x:>``
    is no link to Discord, so the masked link inside it rendered in the bot's voice."""
    shown = shown_url(url)
    return f"<{shown}>" if shown.startswith(("http://", "https://")) else f"`{shown}`"


def format_footer(result: RunResult, *, stopped_by: str | None = None, mid_call: bool = False) -> str:
    """``mid_call``: stopped while a model call was under way, which the provider bills: the quota
    counts it by estimate (``agent.run_state.hold.cut``), and the footer says which call that is (it
    said "no model call" and $0 for a run stopped in its first call)."""
    u = result.usage
    cached = f", {u.cached_tokens:,} cached" if u.cached_tokens else ""
    # Billed at 1.25x (2x for 1-hour entries) the input price: unnamed, a cost read as too high for its tokens.
    cached += f", {u.cache_write_tokens:,} cache writes" if u.cache_write_tokens else ""
    reasoning = f", of which {u.reasoning_tokens:,} reasoning" if u.reasoning_tokens else ""
    status = {
        "completed": "",
        "max_iterations": " · ⏱️ step limit reached: a follow-up here goes on from it",  # it does (history)
        "budget": " · 💸 stopped by a limit",
        "error": " · ⚠️ failed",
        "cancelled": " · ⏹️ stopped",
    }.get(result.status, "")
    if stopped_by:
        status = f" · ⏹️ stopped by {stopped_by}"
    if mid_call:
        status += " · the model call under way is counted by estimate"
    est = "estimated: " if u.estimated else ""  # the server reported no usage: counted locally
    usage = (
        f"-# {result.steps_said} · {est}{u.total_tokens:,} tokens "
        f"({u.prompt_tokens:,} in{cached}, {u.completion_tokens:,} out{reasoning}) · "
        f"{result.cost.format(estimated=u.estimated)} · "
        f"{', '.join(result.models) or ('no model call finished' if mid_call else _no_model(result))} · "
        f"{result.duration:.1f}s{status}"
    )
    return "\n".join([*_sources(result.sources, FOOTER_ROOM - len(usage)), usage])


def _no_model(result: RunResult) -> str:
    """A call that failed at step 1 was made (and maybe waited for, retried): "no model call" was false."""
    return "no model answered" if result.status == "error" and result.stopped_at else "no model call"


def _sources(urls: list[str], room: int) -> list[str]:
    """Up to 10 sources that fit ``room`` whole: long URLs (tracking queries) pushed the footer past
    Discord's 2,000 characters, where it was cut, link and usage line and the requester's ping with it."""
    lines: list[str] = []
    room -= len("**Sources**\n") + len("…and 9999 more\n")
    for url in urls[:10]:
        # Every producer's URL (a search API's, an MCP server's, an imported memory's) is shown encoded:
        # ``>`` and a line break in one ended the link and put a heading or a masked link in the footer.
        line = f"{len(lines) + 1}. {shown_source(url)}"
        if len(line) + 1 <= room:
            lines.append(line)
            room -= len(line) + 1
    if len(urls) > len(lines):
        lines.append(f"…and {len(urls) - len(lines)} more")
    return ["**Sources**", *lines] if lines or urls else []
