"""Rendering helpers for the admin and usage replies: values as people read them, embeds within limits,
and :func:`reply` (ephemeral, mentioning nobody).

Discord refuses a whole message when one embed limit is passed (description 4096, field value 1024,
25 fields, 6000 characters in all), so every embed here goes through :func:`fit_embed`, which clips and
drops instead of failing. A clipped reply that says "… and 3 more" is better than no reply.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import discord
from discord import app_commands
from discord.utils import MISSING

from agent.logs import redact_query
from bot.discord_sink import NO_MENTIONS
from bot.limits import GUILD_BUDGET, LIMIT_LABELS, USER_LIMITS, Limits, discord_timestamp, format_usd
from bot.store import AuditEntry, GuildSettings

DESCRIPTION_MAX = 4096
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FIELDS_MAX = 25
TITLE_MAX = 256
FOOTER_MAX = 2048
EMBED_TOTAL_MAX = 6000

MONEY_LIMITS = frozenset({"cost_per_month_usd", GUILD_BUDGET})
ACCENT = discord.Colour.blurple()
WARNING = discord.Colour.orange()


def clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + "…"


def one_line(text: str, limit: int) -> str:
    return clip(" ".join(text.split()), limit)


def code(text: str) -> str:
    """Inline code that a backtick in the text cannot break out of."""
    return "`" + text.replace("`", "ʼ") + "`"


def join_lines(items: Iterable[str], limit: int, *, sep: str = "\n", more: str = "\n… and {n} more") -> str:
    """As many whole items (never half a mention) as fit in ``limit`` characters, then a count of the rest.

    Room for the count is kept at every step, so it always fits; a first item longer than everything
    is clipped rather than dropped.
    """
    items = list(items)
    whole = sep.join(items)
    if len(whole) <= limit:
        return whole
    rest = [more.format(n=n) if n else "" for n in range(len(items), -1, -1)]  # rest[i]: after i items
    used = 0
    for i, item in enumerate(items):  # the whole does not fit, so this breaks
        used += len(item) + (len(sep) if i else 0)
        if used + len(rest[i + 1]) > limit:
            break
    if i == 0:
        return clip(items[0], max(1, limit - len(rest[1]))) + rest[1]
    return sep.join(items[:i]) + rest[i]


def join_items(items: Sequence[str], limit: int) -> str:
    return join_lines(items, limit, sep=", ", more=" and {n} more")


class Refusal(app_commands.AppCommandError):
    """Ends a command with this message to its caller (ephemeral, shown by ``on_app_command_error``)."""


async def reply(
    interaction: discord.Interaction,
    content: str | None = None,
    *,
    embed: discord.Embed | None = None,
    view: discord.ui.View | None = None,
    file: discord.File | None = None,
) -> None:
    """Ephemeral, mentioning nobody; a followup if the interaction was already answered."""
    done = interaction.response.is_done()
    await (interaction.followup.send if done else interaction.response.send_message)(
        MISSING if content is None else clip(content, 2000),
        embed=embed or MISSING,
        view=view or MISSING,
        file=file or MISSING,
        ephemeral=True,
        allowed_mentions=NO_MENTIONS,
    )


def is_manager(interaction: discord.Interaction) -> bool:
    """Manage Server, or Administrator (which implies every permission). A command's default permission
    is only a default (a server can re-grant it to anyone), so handlers check again."""
    perms = interaction.permissions
    return perms.manage_guild or perms.administrator


DM_WINDOW = 3600.0
"""One "I can't post there" DM per member per channel per hour. Each message of a member who keeps
posting where the bot may not answer was a DM of the same refusal: once tells them, and an hour is
longer than a conversation yet short enough that someone back later (the permission still missing) is
told again rather than met with silence."""
DMS_KEPT = 10_000
"""(member, channel) pairs remembered; the oldest are forgotten first (in memory: a restart may DM again)."""


class DmLimit:
    """Who was DMed about which channel, and when: at most one such DM per ``window``."""

    def __init__(self, window: float = DM_WINDOW, kept: int = DMS_KEPT) -> None:
        self.window, self.kept = window, kept
        self._sent: OrderedDict[tuple[int, int], float] = OrderedDict()  # oldest first

    def allow(self, member_id: int, channel_id: int) -> bool:
        """Whether to DM now; a yes is remembered (also when the DM then fails: asking again costs a write)."""
        key, now = (member_id, channel_id), time.monotonic()
        sent = self._sent.get(key)
        if sent is not None and now - sent < self.window:
            return False
        self._sent[key] = now
        self._sent.move_to_end(key)
        while len(self._sent) > self.kept:
            self._sent.popitem(last=False)
        return True


async def tell(message: discord.Message, text: str, dms: DmLimit) -> None:
    """Answer a member's message with a reply; where the bot may not post, in a DM instead, so a
    refusal is never lost in silence (a DM the member does not accept is given up; ``dms`` bounds them)."""
    try:
        await message.reply(text, allowed_mentions=NO_MENTIONS)
        return
    except discord.Forbidden:
        pass
    except discord.HTTPException:
        return
    await tell_in_dm(message.author, message.channel, text, dms)


async def tell_in_dm(member: discord.abc.User, channel: Any, text: str, dms: DmLimit) -> None:
    """What the bot cannot post in ``channel``, told to ``member`` in a DM (one per channel per window)."""
    if not dms.allow(member.id, channel.id):
        return
    where = getattr(channel, "mention", "there")
    try:
        await member.send(
            f"{text}\n-# (I can't post in {where}, so I'm telling you here.)", allowed_mentions=NO_MENTIONS
        )
    except discord.HTTPException:
        pass


async def defer_command(interaction: discord.Interaction) -> bool:
    """A cog's ``interaction_check``: defer a slash command (ephemeral, "thinking…") before any database
    work, so a slow or locked database never misses Discord's 3 s; :func:`reply` then sends followups.
    Autocomplete and components pass through untouched (they cannot be deferred this way)."""
    if interaction.type == discord.InteractionType.application_command and not interaction.response.is_done():
        await interaction.response.defer(ephemeral=True, thinking=True)
    return True


# --- values ---------------------------------------------------------------------------------------


def format_limit(name: str, value: float | None) -> str:
    return "unlimited" if value is None else format_amount(name, value)


def format_amount(name: str, value: float) -> str:
    """Usage of one limit: money in dollars, the rest as whole numbers."""
    if name in MONEY_LIMITS:
        return format_usd(value)
    return f"{int(value):,}"


def format_setting(key: str, value: Any, *, present: bool = True) -> str:
    """A stored override for the audit log and replies; ``present=False`` is "no override"."""
    if not present:
        return "default"
    head = key.split(".")[0]
    if value is None:
        return "unlimited"
    if isinstance(value, bool):
        return "on" if value else "off"
    if head == "tier" and isinstance(value, list):
        return tier_line(value)
    if key == "channels" and isinstance(value, list):
        return ", ".join(f"<#{c}>" for c in value) or "every channel"
    if head in ("persona", "channel_persona"):
        return code(one_line(str(value), 60))
    if head == "mcp":  # a URL's user:password is a secret wherever it is shown, the audit lines too
        return code(one_line(redact_query(str(value)), 80))
    if head in ("limit", "role_limit"):
        return format_limit(key.split(".")[-1], value)
    if isinstance(value, list):  # emptied, it read "`fetch.allow`: default → " in the audit
        return ", ".join(code(str(v)) for v in value) or ("any domain" if key == "fetch.allow" else "none")
    return code(one_line(str(value), 80))


def describe_key(key: str) -> str:
    """A key as an admin reads it: role and channel ids as mentions (they render, and never ping)."""
    parts = key.split(".")
    if parts[0] == "role_limit" and len(parts) == 3:
        return f"<@&{parts[1]}> {LIMIT_LABELS.get(parts[2], parts[2])}"
    if parts[0] == "role_limit" and len(parts) == 2:
        return f"every limit of <@&{parts[1]}>"
    if parts[0] == "channel_persona" and len(parts) == 2:
        return f"persona of <#{parts[1]}>"
    if parts[0] == "limit" and len(parts) == 2:
        return LIMIT_LABELS.get(parts[1], parts[1])
    return code(key)


def audit_line(entry: AuditEntry) -> str:
    old = format_setting(entry.key, entry.old, present=entry.old_set)
    new = format_setting(entry.key, entry.new, present=entry.new_set)
    return f"{discord_timestamp(entry.at)} <@{entry.actor_id}> {describe_key(entry.key)}: {old} → {new}"


# --- embeds ---------------------------------------------------------------------------------------


def fit_embed(
    title: str,
    description: str = "",
    fields: Sequence[tuple[str, str | list[str]]] = (),
    *,
    footer: str | None = None,
    colour: discord.Colour = ACCENT,
) -> discord.Embed:
    """An embed that Discord accepts whatever the content: parts clipped, surplus fields dropped.

    A field given as lines keeps as many whole lines as fit (:func:`join_lines`). The total budget goes
    to the title, footer and description first, then fields in order; a field that no longer fits is
    cut to what remains, and fields after that are dropped with a note.
    """
    title = clip(title, TITLE_MAX)
    footer_text = clip(footer, FOOTER_MAX) if footer else ""
    room = EMBED_TOTAL_MAX - len(title) - len(footer_text) - 60  # 60: room for the "left out" note
    description = clip(description, min(DESCRIPTION_MAX, max(0, room)))
    room -= len(description)
    embed = discord.Embed(title=title, description=description or None, colour=colour)
    dropped = 0
    for name, value in fields:
        name = clip(name or "\u200b", FIELD_NAME_MAX)
        if isinstance(value, list):
            value = join_lines(value, FIELD_VALUE_MAX)
        value = clip(value or "—", FIELD_VALUE_MAX)
        if len(embed.fields) >= FIELDS_MAX or room < len(name) + 20:
            dropped += 1
            continue
        if len(name) + len(value) > room:
            value = clip(value, room - len(name))
        embed.add_field(name=name, value=value, inline=False)
        room -= len(name) + len(value)
    if dropped:
        note = f"{dropped} section{'s' if dropped != 1 else ''} left out (too long for Discord)"
        footer_text = f"{footer_text} · {note}" if footer_text else note
    if footer_text:
        embed.set_footer(text=clip(footer_text, FOOTER_MAX))
    return embed


# --- /config show ---------------------------------------------------------------------------------


def tier_line(models: Sequence[str]) -> str:
    """Comma-separated: an arrow would read as "changed to" next to the audit log's arrows."""
    return ", ".join(code(m) for m in models) if models else "(no models)"


def effective_value(gs: GuildSettings, limits: Limits, key: str) -> str:
    """What ``key`` is in force right now (an override or the bot's default), as an admin reads it."""
    head, _, name = key.partition(".")
    if head == "tier":
        return tier_line(gs.tiers[name]) if gs.tiers.get(name) else "not defined"
    if head == "default_tier":  # without an override /research lets the router choose (bot.control)
        return code(gs.default_tier) if "default_tier" in gs.overrides else "auto (chosen per task)"
    if head == "limit":
        return format_limit(name, limits.get(name))
    if head == "role_limit":
        role, _, limit = name.partition(".")
        values = gs.role_limits.get(int(role), {})
        return format_limit(limit, values[limit]) if limit in values else "no role limit"
    if head == "tool":
        return "on" if gs.tool_enabled(name) else "off"
    if head == "max_steps":
        return str(gs.max_steps)
    if head == "channels":
        return ", ".join(f"<#{c}>" for c in gs.channels) or "every channel"
    if head in ("persona", "channel_persona"):
        text = gs.channel_personas.get(int(name)) if name else gs.persona
        return code(one_line(text, 80)) if text else "none"
    if head == "research":
        helper = gs.research.get(name)
        return f"{helper} researches, {name} writes" if helper else f"off ({name} does its own research)"
    if key == "reader":
        return "on" if gs.reader else "off"
    if head == "mcp":  # a URL's user:password is a secret wherever it is shown
        url = gs.mcp.get(name)
        return code(redact_query(url)) if url else "none"
    if head == "fetch":
        rules = gs.fetch_allow if name == "allow" else gs.fetch_block
        empty = "any public domain" if name == "allow" else "none"
        return ", ".join(code(r) for r in rules[:20]) + (" …" if len(rules) > 20 else "") if rules else empty
    if key == "memory.auto_store":
        return "on" if gs.memory_auto_store else "off"
    if key == "memory.max_items":
        return "unlimited" if gs.memory_max_items is None else f"{gs.memory_max_items:,}"
    if key == "memory.max_age_days":
        return "unlimited" if gs.memory_max_age_days is None else f"{gs.memory_max_age_days:,} days"
    return format_setting(key, gs.overrides.get(key), present=key in gs.overrides)


def _here(gs: GuildSettings, key: str) -> str:
    return " *(set here)*" if key in gs.overrides else ""


def settings_embed(
    gs: GuildSettings,
    recent_changes: list[AuditEntry],
    limits: Limits,
    tool_names: Iterable[str],
    guild_name: str,
) -> discord.Embed:
    """``/config show``: every effective setting, what this server overrides, and the latest changes."""

    def shown(label: str, key: str, bold: bool = False) -> str:
        value = effective_value(gs, limits, key)
        return f"{label}: {f'**{value}**' if bold else value}{_here(gs, key)}"

    tiers = [
        f"**{name}**: {tier_line(models)}{_here(gs, f'tier.{name}')}"
        for name, models in sorted(gs.tiers.items())
    ]
    tiers.append(shown("Default tier", "default_tier"))
    user_limits = [shown(LIMIT_LABELS[n], f"limit.{n}", bold=True) for n in (*USER_LIMITS, GUILD_BUDGET)]
    roles = [
        f"<@&{rid}>: "
        + ", ".join(f"{LIMIT_LABELS[n]} {format_limit(n, v)}" for n, v in sorted(values.items()))
        for rid, values in sorted(gs.role_limits.items())
    ]
    names = sorted({*tool_names, *(n for n in gs.tools if "__" in n)})  # + its own MCP servers' switched
    on = [code(n) for n in names if gs.tool_enabled(n)]
    off = [code(n) for n in names if not gs.tool_enabled(n)]
    tools = f"On: {', '.join(on) or 'none'}\nOff: {', '.join(off) or 'none'}"
    research = [
        shown("Max steps", "max_steps", bold=True),
        shown("Answers in", "channels"),
        shown("Complex runs", "research.complex"),
        shown("Medium runs", "research.medium"),
        shown("Page reader", "reader", bold=True),
    ]
    personas = [f"Server: {code(one_line(gs.persona, 300)) if gs.persona else 'none'}"]
    personas += [
        f"<#{cid}>: {code(one_line(text, 120))}" for cid, text in sorted(gs.channel_personas.items())
    ]
    memory = [
        shown("Auto-store", "memory.auto_store", bold=True),
        shown("Max items", "memory.max_items", bold=True),
        shown("Max age", "memory.max_age_days", bold=True),
    ]
    web = [shown("fetch_url may read", "fetch.allow"), shown("fetch_url never reads", "fetch.block")]
    web += [f"MCP {code(n)}: {effective_value(gs, limits, f'mcp.{n}')}" for n in sorted(gs.mcp)]
    changes = [audit_line(e) for e in recent_changes]
    fields: list[tuple[str, str | list[str]]] = [
        ("Models (first is tried first)", tiers),
        ("Limits per user", user_limits),
        ("Role limits", roles or "none"),
        ("Tools", tools),
        ("Research", research),
        ("Persona", personas),
        ("Memory", memory),
        ("Web and MCP", web),
        ("Recent changes", changes or "No changes yet."),
    ]
    return fit_embed(
        f"agentbot settings · {guild_name}",
        fields=fields,
        footer="Change with /config <setting> · undo with /config reset · all changes are logged",
    )
