"""/usage me and /usage server: what each person has used, what is left, and what the server spends.

Decisions: ``/usage`` is a group (``me``, ``server``) because Discord cannot run a command that has
subcommands on its own; ``server`` is visible to everyone but checks Manage Server in the handler, since
per-user spending is the admins' business. Replies are ephemeral embeds that mention nobody.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.control import roles_of
from bot.formatting import (
    ACCENT,
    MONEY_LIMITS,
    WARNING,
    Refusal,
    code,
    defer_command,
    discord_timestamp,
    fit_embed,
    format_amount,
    format_limit,
    format_usd,
    is_manager,
    reply,
)
from bot.limits import ALL_SERVERS_REQUESTS, GUILD_BUDGET, USER_LIMITS
from bot.store import LimitUsage, ServerUsage, UsageReport

if TYPE_CHECKING:
    from bot.app import AgentBot

TOP_USERS = 10


USAGE_HEADINGS: dict[str, str] = {
    "requests_per_day": "Requests today",
    "tokens_per_day": "Tokens today",
    "cost_per_month_usd": "Spending this month",
    "concurrent_sessions": "Sessions running",
    GUILD_BUDGET: "Server budget this month",
    ALL_SERVERS_REQUESTS: "Requests today in all servers",
}
USAGE_ORDER = (USER_LIMITS[0], ALL_SERVERS_REQUESTS, *USER_LIMITS[1:], GUILD_BUDGET)


UNKNOWN_AMOUNT = "an unknown amount"
"""Spending whose every call had no price: "$0.00+" read as free, where the footer says "unknown"."""


def spent(usd: float, unknown_calls: int) -> str:
    """Money spent: ``$1.25``, ``$1.25+`` when some calls had no price (a lower bound), and
    :data:`UNKNOWN_AMOUNT` when none that cost anything had one."""
    if unknown_calls and usd == 0:
        return UNKNOWN_AMOUNT
    return format_usd(usd) + ("+" if unknown_calls else "")


ESTIMATE = "~"
"""Marks a figure that calls counted by estimate are part of (the footer and `ask` say "estimated")."""


def estimate_note(calls: int, when: str) -> str:
    """The footer's explanation of :data:`ESTIMATE`."""
    return (
        f" {calls} call{'s' if calls != 1 else ''} {when} {'were' if calls != 1 else 'was'} counted by estimate"
        " (the model's server sent no usage, or the call was stopped under way): figures marked ~ are estimates."
    )


def marked(text: str, estimated: bool) -> str:
    """``text`` marked :data:`ESTIMATE` when ``estimated`` (never "an unknown amount": no figure to mark)."""
    return ESTIMATE + text if estimated and text != UNKNOWN_AMOUNT else text


def usage_line(item: LimitUsage, *, at_least: bool = False, estimated: bool = False) -> str:
    """``Tokens today: 340 of 200,000 · 199,660 left · resets <t:…:R>``; ``~340`` when ``estimated``."""
    if item.name in MONEY_LIMITS:
        used = spent(item.used - item.reserved, int(at_least))
    else:
        used = format_amount(item.name, item.used - item.reserved)
    used = marked(used, estimated)
    if item.reserved > 0:  # what is spent, and apart what a running step holds (it counts against the limit)
        used += f" (+ {format_amount(item.name, item.reserved)} reserved by a running request)"
    text = f"{'⛔ ' if item.exhausted else ''}**{USAGE_HEADINGS[item.name]}**: {used}"
    if item.limit is None:
        text += " (unlimited)"
    else:
        left = "none" if item.exhausted else format_amount(item.name, item.remaining or 0.0)
        text += f" of {format_limit(item.name, item.limit)} · {left} left"
    if item.name == GUILD_BUDGET:
        text += " (shared by the whole server)"
    if item.resets_at is not None and item.limit is not None:
        text += f" · resets {discord_timestamp(item.resets_at)}"
    return text


def usage_embed(report: UsageReport, who: str) -> discord.Embed:
    by_name = {i.name: i for i in report.items}
    at_least = report.unknown_cost_calls > 0
    server_at_least = at_least or report.server_unknown_cost_calls > 0
    estimated = {
        "tokens_per_day": report.estimated_calls_today > 0,
        "cost_per_month_usd": report.estimated_calls > 0,
        GUILD_BUDGET: report.server_estimated_calls > 0,
    }
    lines = [
        usage_line(
            by_name[n],
            at_least=server_at_least if n == GUILD_BUDGET else at_least,
            estimated=estimated.get(n, False),
        )
        for n in USAGE_ORDER
        if n in by_name
    ]
    footer = "Days and months are counted in UTC."
    if any(i.reserved > 0 for i in report.items):
        footer += " Reserved: what your running research may use next; what it does not use is given back."
    if at_least:
        footer += (
            f" {report.unknown_cost_calls} call{'s' if report.unknown_cost_calls != 1 else ''} this month "
            "used a model without a known price: spending is at least what is shown."
        )
    elif server_at_least:
        footer += " Some calls in this server used a model without a known price: its spending is at least what is shown."
    if report.estimated_calls:
        footer += estimate_note(report.estimated_calls, "of yours this month")
    elif report.server_estimated_calls:
        footer += estimate_note(report.server_estimated_calls, "in this server this month")
    colour = WARNING if any(i.exhausted for i in report.items) else ACCENT
    return fit_embed(f"Usage · {who}", "\n".join(lines), footer=footer, colour=colour)


def server_usage_embed(usage: ServerUsage, guild_name: str) -> discord.Embed:
    budget = format_limit(GUILD_BUDGET, usage.budget_usd)
    est = usage.estimated_calls > 0
    head = (
        f"**{usage.month}**: {marked(f'{usage.tokens:,}', est)} tokens"
        f" · {marked(spent(usage.cost_usd, usage.unknown_cost_calls), est)} spent of a {budget} budget"
    )
    if usage.budget_usd is not None:
        head += f" · {format_usd(max(0.0, usage.budget_usd - usage.cost_usd))} left"
    head += f" · resets {discord_timestamp(usage.resets_at)}"
    users = [
        f"{i}. <@{u.user_id}>: {u.requests:,} request{'s' if u.requests != 1 else ''}"
        f" · {marked(f'{u.tokens:,}', u.estimated_calls > 0)} tokens"
        f" · {marked(spent(u.cost_usd, u.unknown_cost_calls), u.estimated_calls > 0)}"
        for i, u in enumerate(usage.top_users, 1)
    ]
    models = [
        f"{code(f'{m.provider}/{m.model}')}: {m.calls:,} call{'s' if m.calls != 1 else ''}"
        f" · {marked(f'{m.prompt_tokens:,}', m.estimated_calls > 0)} in"
        + (f" ({m.cached_tokens:,} cached)" if m.cached_tokens else "")
        + f" / {m.completion_tokens:,} out"
        + (f" ({m.reasoning_tokens:,} reasoning)" if m.reasoning_tokens else "")
        + " tokens"
        + f" · {marked(spent(m.cost_usd, m.unknown_cost_calls), m.estimated_calls > 0)}"
        for m in usage.models
    ]
    footer = "Top users by spending · days and months in UTC."
    if usage.unknown_cost_calls:
        footer += (
            f" {usage.unknown_cost_calls} call(s) had no known price: amounts marked + are lower bounds."
        )
    if usage.estimated_calls:
        footer += estimate_note(usage.estimated_calls, "this month")
    return fit_embed(
        f"Server usage · {guild_name}",
        head,
        [
            ("Top users", users or "No usage yet this month."),
            ("By provider and model", models or "No model calls yet this month."),
        ],
        footer=footer,
    )


class UsageCog(commands.Cog):
    usage = app_commands.Group(
        name="usage", description="agentbot usage and limits (only you see the answer).", guild_only=True
    )

    def __init__(self, bot: AgentBot) -> None:
        self.bot = bot

    async def interaction_check(self, interaction: discord.Interaction) -> bool:  # type: ignore[override]
        if interaction.guild_id is None:  # guild_only makes this unreachable; never fall back to anything
            raise app_commands.CheckFailure("/usage works in a server, not in direct messages.")
        return await defer_command(interaction)

    @usage.command(name="me", description="Your usage, what is left, and when each limit resets.")
    async def me(self, interaction: discord.Interaction) -> None:
        report = await self.bot.services.quotas.usage(
            interaction.guild_id, interaction.user.id, roles_of(interaction.user, interaction.guild_id)
        )
        who = getattr(interaction.user, "display_name", str(interaction.user))
        await reply(interaction, embed=usage_embed(report, who))

    @usage.command(name="server", description="This month's usage on this server (needs Manage Server).")
    async def server(self, interaction: discord.Interaction) -> None:
        if not is_manager(interaction):
            raise Refusal(
                "⛔ You need the Manage Server permission to see this server's usage. "
                "Use `/usage me` for your own."
            )
        usage = await self.bot.services.quotas.server_usage(interaction.guild_id, top=TOP_USERS)
        name = interaction.guild.name if interaction.guild else str(interaction.guild_id)
        await reply(interaction, embed=server_usage_embed(usage, name))


async def setup(bot: AgentBot) -> None:
    await bot.add_cog(UsageCog(bot))
