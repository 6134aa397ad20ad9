"""/config's logic apart from its commands (bot.cogs.admin): the permission rule, applying and reporting
changes, choices, and reset's confirmation.

Reset's buttons carry the key and an expiry time in their custom id, so a click works after a restart
but not days later; a click checks the caller's permission again (a button is no command check).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import discord
from discord import app_commands

from agent.logs import redact_query
from agent.memory.types import MemoryStoreError
from agent.models.tiers import TIERS
from agent.tools.domains import DomainPolicy
from agent.tools.python_exec import config_note
from agent.tools.registry import Tool
from bot.formatting import (
    EMBED_TOTAL_MAX,
    FIELD_VALUE_MAX,
    Refusal,
    clip,
    code,
    describe_key,
    effective_value,
    is_manager,
    join_items,
    one_line,
)
from bot.limits import GUILD_BUDGET, LIMIT_LABELS, USER_LIMITS
from bot.store import GuildSettings, GuildSettingsStore, QuotaStore, SettingError, matching
from bot.store.settings_schema import GROUPS, MCP_MAX_SERVERS
from bot.views import confirm_view, confirmation_open


def guild_locks() -> defaultdict[int, asyncio.Lock]:
    """Per server, held by /config commands that change a setting from what they read (channels, mcp):
    three admins adding a channel at once were each told ✅, and one channel was kept."""
    return defaultdict(asyncio.Lock)


RESET_CONFIRM_SECONDS = 300
ALL_WORDS = frozenset({"", "all", "everything", "*"})


LIMIT_CHOICES = [
    app_commands.Choice(name=f"{LIMIT_LABELS[n]} ({n})", value=n) for n in (*USER_LIMITS, GUILD_BUDGET)
]
RESEARCH_CHOICES = {  # weaker tiers nearest first, then off
    tier: [
        *(
            app_commands.Choice(name=f"the {helper} tier researches, {tier} writes", value=helper)
            for helper in reversed(TIERS[:i])
        ),
        app_commands.Choice(name=f"off: the {tier} tier does everything", value="off"),
    ]
    for i, tier in enumerate(TIERS)
    if i
}


def refusal(interaction: discord.Interaction) -> str | None:
    """Why the caller may not manage agentbot here, or ``None``. Discord's default permission is only a
    default (a server can re-grant /config to anyone), so the bot checks it on every use."""
    if interaction.guild_id is None:
        return "/config works in a server, not in direct messages."
    if not is_manager(interaction):
        return "⛔ You need the Manage Server permission to change agentbot's settings on this server."
    return None


Choices = list[app_commands.Choice[str]]
admins_only = app_commands.check(lambda interaction: refusal(interaction) is None)
"""For autocomplete, which runs none of the command's checks, only its own: nothing for a caller
:func:`refusal` turns away (discord.py answers with no choices)."""


def plain_key(key: str) -> str:
    """Autocomplete choices cannot render mentions: name a role or channel by id."""
    parts = key.split(".")
    if parts[0] == "role_limit" and len(parts) == 3:
        return f"role {parts[1]}: {LIMIT_LABELS.get(parts[2], parts[2])}"
    if parts[0] == "channel_persona":
        return f"persona of channel {parts[1]}"
    return key


async def reset_clicked(interaction: discord.Interaction, expires: str, key: str = "") -> None:
    why = refusal(interaction)
    if why is not None:
        raise Refusal(why)  # answered privately by on_app_command_error, like a command's refusal
    guild_id = interaction.guild_id
    assert guild_id is not None
    if not await confirmation_open(interaction, expires, "/config reset"):
        return
    store: GuildSettingsStore = interaction.client.services.guild_settings  # type: ignore[attr-defined]
    try:
        removed = await store.reset(guild_id, interaction.user.id, None if key == "*" else key)
    except SettingError as e:
        await interaction.response.edit_message(content=f"⚠️ {e}", view=None)
        return
    if not removed:
        text = "Nothing to reset any more: already at the bot's defaults."
    else:
        listed = join_items([describe_key(k) for k in removed], 1800)
        text = f"✅ Reset {len(removed)} setting{'s' if len(removed) != 1 else ''} to the defaults: {listed}"
    await interaction.response.edit_message(content=clip(text, 2000), view=None)


async def apply_changes(
    store: GuildSettingsStore, quotas: QuotaStore, guild_id: int, actor: int, changes: list[tuple[str, Any]]
) -> str:
    """Validate every change, then store them one by one (each audited); returns what changed."""
    before = await store.get(guild_id)
    try:
        keys = [store.schema.parse_key(k).key for k, _ in changes]
        for key, (_, value) in zip(keys, changes, strict=True):
            store.schema.validate(key, value)
    except SettingError as e:
        return f"⚠️ {e}"
    limits_before = await quotas.limits_for(guild_id)
    old = {k: effective_value(before, limits_before, k) for k in keys}
    try:
        for key, (_, value) in zip(keys, changes, strict=True):
            await store.set(guild_id, actor, key, value)
    except SettingError as e:  # e.g. a tier removed meanwhile: report, keep what was stored
        return f"⚠️ {e}"
    after = await store.get(guild_id)
    limits_after = await quotas.limits_for(guild_id)
    lines = []
    for key in keys:
        new = effective_value(after, limits_after, key)
        if new == old[key] and key in before.overrides:
            lines.append(f"No change: {describe_key(key)} is already {new}.")
        elif new == old[key]:  # the default's value, now pinned here (a later default change won't move it)
            lines.append(f"✅ {describe_key(key)}: {new} (now set for this server)")
        else:
            lines.append(f"✅ {describe_key(key)}: {old[key]} → {new}")
    return "\n".join(lines)


After = Callable[[GuildSettings], str] | None
"""A line added to a change's reply, on the settings as they now are."""


def refuse_unusable(schema: Any, router: Any, key: str, models: str) -> None:
    """A model the bot cannot call (its provider has no key here) would fail every run on the tier:
    every model the price package knows passes the schema, so ask the router, which builds them."""
    try:
        chosen = schema.validate(key, models)
    except SettingError:
        return  # apply_changes reports it
    for model in chosen:
        if router.model(model) is None:
            why = router.unconfigured.get(model, "its provider is not configured")
            raise Refusal(f"⚠️ {code(model)} cannot be used by this bot: {why}. Nothing changed.")


async def check_mcp_url(name: str, url: str, guild_mcp: Any) -> None:
    """A loopback or private address the guard refuses at every turn ("left out") is refused here, in the
    guard's words (``GuildMcp.refusal``): it used to be accepted with a ✅."""
    if why := await guild_mcp.refusal(url):
        raise Refusal(f"⚠️ MCP server {code(name)} not added: {one_line(why, 300)} Nothing changed.")


def cannot_work_in(channel: discord.TextChannel) -> After:
    """A line for ``/config channels add``'s reply naming what the bot lacks there to open a session: it
    answered ✅ alone, and every /research and mention in the only channel allowed was then refused."""
    from bot.cogs.research import missing_permissions

    lacking = missing_permissions(channel.permissions_for(channel.guild.me), private=False)
    if not lacking:
        return None
    names = ", ".join(f"**{p}**" for p in lacking)
    return lambda _gs: (
        f"\n⚠️ I can't start research in <#{channel.id}> yet: I am missing {names} there. "
        "A server admin can grant it to my role (or in this channel's permissions)."
    )


async def past_limits(memory: Any, guild_id: int, *limits: str | None) -> After:
    """A line for ``/config memory``'s reply when it sets ``limits``: how many memories they forget, as
    retention will (older than ``max_age_days``, then the oldest whole memories until ``max_items`` rows
    are left). They went at the next use of memory, for good, after a reply that said nothing of it. The
    rows are read before the change; none (no memory, or unreadable) says nothing."""
    if memory is None or all(v is None for v in limits):
        return None
    try:
        rows = [(r.created, r.parent or r.id) async for r in memory.records(str(guild_id))]
    except MemoryStoreError:
        return None
    if not rows:
        return None

    def line(gs: GuildSettings) -> str:
        created: dict[str, float] = {}
        for at, memory_id in rows:
            created[memory_id] = min(at, created.get(memory_id, at))
        size, oldest_first = Counter(m for _, m in rows), sorted(created, key=lambda m: created[m])
        days = gs.memory_max_age_days
        gone = [m for m in oldest_first if days is not None and created[m] < time.time() - days * 86400]
        left = len(rows) - sum(size[m] for m in gone)
        for m in oldest_first:
            if gs.memory_max_items is None or left <= gs.memory_max_items:
                break
            if m not in gone:
                gone.append(m)
                left -= size[m]
        if not gone:
            return ""
        return (
            f"\n⚠️ {len(gone)} of this server's {len(created)} memories are past these limits: they are "
            "forgotten, oldest first, the next time memory is used. Set the limit back now to keep them "
            "(`/memory export` keeps a copy)."
        )

    return line


def in_both_lists(gs: GuildSettings) -> str:
    """A line for ``/config fetch``'s reply naming the allowed domains the block-list covers too (block
    wins, README): they were accepted without a word, and fetch_url then refused what the admin allowed."""
    both = DomainPolicy.of(gs.fetch_allow, gs.fetch_block).overlaps()
    if not both:
        return ""
    shown = ", ".join(f"`{d}`" for d in both[:10]) + (" …" if len(both) > 10 else "")
    return (
        f"\n⚠️ In both the allow-list and the block-list: {shown}. Block wins: fetch_url will not read them."
    )


def model_choices(known_models: list[str], current: str) -> Choices:
    """Completes the last name of a comma-separated list, keeping the names before it."""
    head, _, last = current.rpartition(",")
    chosen = [m.strip() for m in head.split(",") if m.strip()]
    prefix = "".join(f"{m}, " for m in chosen)
    known = [m for m in known_models if m.lower() not in {c.lower() for c in chosen}]
    values = [prefix + m for m in matching(known, last, limit=len(known)) if len(prefix + m) <= 100]
    return [app_commands.Choice(name=v, value=v) for v in values[:25]]


async def reset_prompt(
    store: GuildSettingsStore, guild_id: int, setting: str | None, confirm_seconds: int
) -> tuple[str, discord.ui.View | None]:
    """What /config reset asks (with its buttons), or why there is nothing to ask."""
    try:  # no setting (or "all"): everything
        key = None if (setting or "").strip().lower() in ALL_WORDS else store.schema.reset_key(setting or "")
    except SettingError as e:
        return f"⚠️ {e}", None
    gs = await store.get(guild_id)
    keys = [k for k in gs.overrides if key is None or k == key or k.startswith(key + ".")]
    what = "every setting" if key is None else GROUPS.get(key, describe_key(key))
    if not keys:
        return f"Nothing to reset: {what} is already at the bot's default.", None
    listed = join_items([describe_key(k) for k in keys], 1500)
    return (
        f"Reset {what} to the bot's defaults? This removes {len(keys)} override"
        f"{'s' if len(keys) != 1 else ''}: {listed}",
        confirm_view("cfgreset", "Reset" if key is None else "Reset it", confirm_seconds, key or "*"),
    )


def reset_choices(gs: GuildSettings, current: str) -> Choices:
    groups = [g for g in GROUPS if any(k.startswith(g + ".") for k in gs.overrides)]
    options = {"all": "everything", **{g: GROUPS[g] for g in groups}}
    options.update({k: one_line(plain_key(k), 80) for k in gs.overrides})
    return [
        app_commands.Choice(name=clip(f"{options[n]} ({n})" if options[n] != n else n, 100), value=n)
        for n in matching(options, current)
        if len(n) <= 100
    ]


def mcp_listing(servers: dict[str, str]) -> str:
    """``/config mcp`` with no server given: this server's MCP servers, URLs without their passwords."""
    lines = [f"`{n}`: {redact_query(u)}" for n, u in sorted(servers.items())]
    return "MCP servers:\n" + ("\n".join(lines) or "none (add one with name and url)")


def check_mcp_name(name: str, current: dict[str, str], operator: Any) -> None:
    """Refuses a name that is one of the bot's own MCP servers, or a new one past the most allowed."""
    key = name.strip().lower()
    if operator is not None and key in operator.names:
        raise Refusal(f"⚠️ `{key}` is the name of one of the bot's own MCP servers; pick another.")
    if key not in current and len(current) >= MCP_MAX_SERVERS:
        raise Refusal(
            f"⚠️ This server already has {MCP_MAX_SERVERS} MCP servers; remove one with "
            "`/config reset mcp.<name>` first."
        )


def with_sandbox_note(embed: discord.Embed, run_python: Tool | None) -> discord.Embed:
    """/config show's embed, with what :func:`config_note` says of run_python first in its Tools field:
    listed under "On" like any tool, an unisolated or refused run_python looked like the sandboxed one.
    The field is cut, never the note, so the embed stays within Discord's limits."""
    note = config_note(run_python)
    for i, field in enumerate(embed.fields if note else ()):
        if field.name == "Tools":
            room = min(FIELD_VALUE_MAX, len(field.value or "") + EMBED_TOTAL_MAX - len(embed))
            value = clip(f"`run_python` {note}\n{field.value}", room)
            embed.set_field_at(i, name=field.name, value=value, inline=field.inline)
    return embed
