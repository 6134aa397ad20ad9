"""/config: admins steer their server (models, limits, tools, channels, persona, memory) from Discord.

Decisions (README "Server settings"):

* Discord's Manage Server default is only a default (a server can re-grant any command), so
  ``interaction_check``, the reset button and autocomplete (which checks do not cover) check the
  caller again with :func:`refusal` before reading or changing anything.
* The store's schema is the one place that validates (numbers pass as text, so ``unlimited`` works);
  its message is shown as is. Discord-side ranges would be a second, drifting copy of the schema.
* ``tier`` takes only the tiers the router picks from: another name would be a silent no-op.
* Every reply is ephemeral and mentions nobody; role and channel mentions there never notify.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from agent.models.tiers import TIERS
from bot.cogs.config_support import (
    LIMIT_CHOICES,
    RESEARCH_CHOICES,
    RESET_CONFIRM_SECONDS,
    After,
    Choices,
    admins_only,
    apply_changes,
    cannot_work_in,
    check_mcp_name,
    check_mcp_url,
    guild_locks,
    in_both_lists,
    mcp_listing,
    model_choices,
    past_limits,
    refusal,
    refuse_unusable,
    reset_choices,
    reset_clicked,
    reset_prompt,
    with_sandbox_note,
)
from bot.formatting import (
    Refusal,
    clip,
    code,
    defer_command,
    describe_key,
    effective_value,
    reply,
    settings_embed,
)
from bot.limits import GUILD_BUDGET
from bot.store import (
    GuildSettingsStore,
    matching,
)

if TYPE_CHECKING:
    from bot.app import AgentBot


def _gid(interaction: discord.Interaction) -> int:
    assert interaction.guild_id is not None  # ConfigCog.interaction_check refused it otherwise
    return interaction.guild_id


class ConfigCog(commands.Cog):
    config = app_commands.Group(
        name="config",
        description="Change agentbot's settings on this server (needs Manage Server).",
        default_permissions=discord.Permissions(manage_guild=True),
        guild_only=True,
    )

    def __init__(self, bot: AgentBot) -> None:
        self.bot = bot
        self.confirm_seconds = RESET_CONFIRM_SECONDS
        """How long a reset confirmation stays valid."""
        self._editing = guild_locks()

    async def cog_load(self) -> None:
        self.bot.buttons["cfgreset"] = reset_clicked

    async def interaction_check(self, interaction: discord.Interaction) -> bool:  # type: ignore[override]
        """Every /config command, before its handler: refused ones get the reason (on_app_command_error);
        allowed ones are deferred before any database work (issue 20.6)."""
        why = refusal(interaction)
        if why is not None:
            raise app_commands.CheckFailure(why)
        return await defer_command(interaction)

    @property
    def store(self) -> GuildSettingsStore:
        return self.bot.services.guild_settings

    async def _set(
        self, interaction: discord.Interaction, *changes: tuple[str, Any], after: After = None
    ) -> None:
        """``after``: a line on the settings as they now are (e.g. a domain in both fetch lists)."""
        quotas, user_id = self.bot.services.quotas, interaction.user.id
        said = await apply_changes(self.store, quotas, _gid(interaction), user_id, [*changes])
        await reply(interaction, said + (after(await self.store.get(_gid(interaction))) if after else ""))

    async def _set_or_show(
        self, interaction: discord.Interaction, heading: str, options: dict[str, Any], after: After = None
    ) -> None:
        """Commands with several optional settings: store the ones given, or show them all if none is."""
        changes = [(k, v) for k, v in options.items() if v is not None]
        if changes:
            await self._set(interaction, *changes, after=after)
            return
        guild_id = _gid(interaction)
        gs = await self.store.get(guild_id)
        limits = await self.bot.services.quotas.limits_for(guild_id)
        lines = [f"{describe_key(k)}: {effective_value(gs, limits, k)}" for k in options]
        await reply(interaction, f"{heading}:\n" + "\n".join(lines))

    @config.command(name="show", description="Show this server's agentbot settings and recent changes.")
    async def show(self, interaction: discord.Interaction) -> None:
        guild_id = _gid(interaction)
        gs, changes = await self.store.get(guild_id), await self.store.history(guild_id, 10)
        limits = await self.bot.services.quotas.limits_for(guild_id)
        name = interaction.guild.name if interaction.guild else str(guild_id)
        embed = settings_embed(gs, changes, limits, self.store.schema.known_tools, name)
        await reply(interaction, embed=with_sandbox_note(embed, self.bot.services.tools.get("run_python")))

    # --- models -----------------------------------------------------------------------------------

    @config.command(name="tier", description="Set the models of a tier, in order (the first is tried first).")
    @app_commands.describe(
        tier="Tier name (e.g. simple, medium, complex)",
        models="Model names separated by commas; the first is tried first, the rest are fallbacks",
    )
    async def tier(self, interaction: discord.Interaction, tier: str, models: str) -> None:
        name = tier.strip().lower()
        if name not in TIERS:
            raise Refusal(
                f"⚠️ Unknown tier {code(tier)}. Tiers: {', '.join(sorted(TIERS))}. "
                "(The router picks among these; a tier of another name would never be used.)"
            )
        refuse_unusable(self.store.schema, self.bot.services.router, f"tier.{name}", models)
        await self._set(interaction, (f"tier.{name}", models))

    @config.command(name="default-tier", description="The tier /research and mentions use by default.")
    @app_commands.describe(tier="An existing tier, or auto (chosen per task)")
    async def default_tier(self, interaction: discord.Interaction, tier: str) -> None:
        if tier.strip().lower() == "auto":  # what /config show calls the default: no override
            guild_id = _gid(interaction)
            if "default_tier" not in (await self.store.get(guild_id)).overrides:
                raise Refusal("No change: the default tier is already auto (chosen per task).")
            await self.store.reset(guild_id, interaction.user.id, "default_tier")
            await reply(interaction, "✅ Default tier: auto (chosen per task).")
            return
        await self._set(interaction, ("default_tier", tier))

    @tier.autocomplete("tier")
    @default_tier.autocomplete("tier")
    @admins_only
    async def _tier_names(self, interaction: discord.Interaction, current: str) -> Choices:
        gs = await self.store.get(interaction.guild_id)
        return [
            app_commands.Choice(
                name=clip(f"{t}: {', '.join(gs.tiers.get(t, [])) or 'no models'}", 100), value=t
            )
            for t in matching(TIERS, current)
        ]

    @tier.autocomplete("models")
    @admins_only
    async def _model_names(self, interaction: discord.Interaction, current: str) -> Choices:
        return model_choices(list(self.store.schema.offered_models), current)

    # --- limits and tools -------------------------------------------------------------------------

    @config.command(name="limits", description="Set a usage limit for every member, or for one role.")
    @app_commands.describe(
        limit="Which limit",
        value="A number above 0 (USD for money), or 'unlimited'",
        role="Only for members with this role (the most generous of a member's roles wins)",
    )
    @app_commands.choices(limit=LIMIT_CHOICES)
    async def limits(
        self,
        interaction: discord.Interaction,
        limit: app_commands.Choice[str],
        value: str,
        role: discord.Role | None = None,
    ) -> None:
        guild_id = _gid(interaction)
        if role is None:
            await self._set(interaction, (f"limit.{limit.value}", value))
            return
        if limit.value == GUILD_BUDGET:
            raise Refusal(
                "⚠️ The server budget covers the whole server, so it cannot be set per role: leave out `role`."
            )
        if role.id == guild_id:
            raise Refusal("⚠️ @everyone is every member: set the server limit instead (leave out `role`).")
        await self._set(interaction, (f"role_limit.{role.id}.{limit.value}", value))

    @config.command(name="tools", description="Turn one of the agent's tools on or off on this server.")
    @app_commands.describe(tool="Tool name", enabled="On (true) or off (false)")
    async def tools(self, interaction: discord.Interaction, tool: str, enabled: bool) -> None:
        name, known, guild_id = tool.strip(), self.store.schema.known_tools, _gid(interaction)
        servers = (await self.store.get(guild_id)).mcp
        if name not in known and "__" in name:  # a tool of one of this server's own MCP servers?
            mine = (await self.bot.services.guild_mcp.tools_for(guild_id, servers))[0] if servers else []
            offered = sorted(t.name for t in mine)
            if name not in offered:
                raise Refusal(
                    f"⚠️ Unknown tool {name!r}. Tools: {', '.join(sorted(known))}; of this server's "
                    f"MCP servers: {', '.join(offered) or 'none'}."
                )
        await self._set(interaction, (f"tool.{name}", enabled))

    @tools.autocomplete("tool")
    @admins_only
    async def _tool_names(self, interaction: discord.Interaction, current: str) -> Choices:
        gs = await self.store.get(interaction.guild_id)  # this server's MCP tools too (typing one worked)
        mine = await self.bot.services.guild_mcp.tool_names(_gid(interaction), gs.mcp, within=2.0)
        return [
            app_commands.Choice(name=f"{t} ({'on' if gs.tool_enabled(t) else 'off'})", value=t)
            for t in matching([*self.store.schema.known_tools, *mine], current)
        ]

    @config.command(name="max-steps", description="The most reasoning steps one research turn may take.")
    @app_commands.describe(steps="A whole number (the allowed range is shown if it is out of range)")
    async def max_steps(self, interaction: discord.Interaction, steps: int) -> None:
        await self._set(interaction, ("max_steps", steps))

    # --- where and how it answers -----------------------------------------------------------------

    @config.command(
        name="channels", description="Where /research and mentions are answered (none = everywhere)."
    )
    @app_commands.describe(action="add or remove a channel, or clear the list", channel="The channel")
    async def channels(
        self,
        interaction: discord.Interaction,
        action: Literal["add", "remove", "clear"],
        channel: discord.TextChannel | None = None,
    ) -> None:
        if action == "clear":
            await self._set(interaction, ("channels", []))
            return
        if channel is None:
            raise Refusal(f"⚠️ Pick the channel to {action} (the `channel` option).")
        async with self._editing[_gid(interaction)]:
            current = list((await self.store.get(_gid(interaction))).channels)
            if action == "add":
                new = [*current, channel.id] if channel.id not in current else current
            else:
                if channel.id not in current:
                    listed = ", ".join(f"<#{c}>" for c in current) or "none (the bot answers everywhere)"
                    raise Refusal(f"⚠️ <#{channel.id}> is not in the list. Channels: {listed}.")
                new = [c for c in current if c != channel.id]
            await self._set(
                interaction, ("channels", new), after=cannot_work_in(channel) if action == "add" else None
            )

    @config.command(name="persona", description="Instructions for the agent, server-wide or for one channel.")
    @app_commands.describe(
        text="The instructions (leave empty to see the current ones)",
        channel="Only this channel and the threads under it",
        clear="Remove the persona instead",
    )
    async def persona(
        self,
        interaction: discord.Interaction,
        text: str | None = None,
        channel: discord.TextChannel | None = None,
        clear: bool = False,
    ) -> None:
        guild_id = _gid(interaction)
        key = f"channel_persona.{channel.id}" if channel else "persona"
        where = f"<#{channel.id}> and its threads" if channel else "this server"
        if clear and text:
            raise Refusal("⚠️ Give either `text` or `clear`, not both.")
        gs = await self.store.get(guild_id)
        if clear:
            if key not in gs.overrides:
                raise Refusal(f"No persona is set for {where}; nothing changed.")
            await self.store.reset(guild_id, interaction.user.id, key)
            await reply(interaction, f"✅ Persona for {where} removed.")
            return
        if text is None:
            current = gs.channel_personas.get(channel.id) if channel else gs.persona
            shown = f"```\n{clip(current.replace('```', 'ʼʼʼ'), 1800)}\n```" if current else "none"
            await reply(interaction, f"Persona for {where}: {shown}")
            return
        await self._set(interaction, (key, text))

    @config.command(name="memory", description="Long-term memory: auto-store, how many items, how long.")
    @app_commands.describe(
        auto_store="Store each finished research in memory automatically",
        max_items="Most items kept (a whole number, or 'unlimited')",
        max_age_days="Forget items older than this many days (or 'unlimited')",
    )
    async def memory(
        self,
        interaction: discord.Interaction,
        auto_store: bool | None = None,
        max_items: str | None = None,
        max_age_days: str | None = None,
    ) -> None:
        await self._set_or_show(
            interaction,
            "Memory settings",
            {
                "memory.auto_store": auto_store,
                "memory.max_items": max_items,
                "memory.max_age_days": max_age_days,
            },
            await past_limits(self.bot.services.memory, _gid(interaction), max_items, max_age_days),
        )

    @config.command(name="routing", description="Who researches for the stronger tiers, and the page reader.")
    @app_commands.describe(
        complex_research="Which tier's models search and read for complex runs before the complex model writes",
        medium_research="Which tier's models search and read for medium runs before the medium model writes",
        page_reader="Long pages read by the simple tier's model, which passes on notes (saves the most)",
    )
    @app_commands.choices(
        complex_research=RESEARCH_CHOICES["complex"], medium_research=RESEARCH_CHOICES["medium"]
    )
    async def routing(
        self,
        interaction: discord.Interaction,
        complex_research: app_commands.Choice[str] | None = None,
        medium_research: app_commands.Choice[str] | None = None,
        page_reader: bool | None = None,
    ) -> None:
        await self._set_or_show(
            interaction,
            "Routing settings",
            {
                "research.complex": complex_research.value if complex_research else None,
                "research.medium": medium_research.value if medium_research else None,
                "reader": page_reader,
            },
        )

    @config.command(name="fetch", description="Which web domains fetch_url may read on this server.")
    @app_commands.describe(
        allow="Only these domains (and their subdomains), comma-separated; 'none' lifts the allow-list",
        block="Never these domains (and their subdomains), comma-separated; 'none' empties the block-list",
    )
    async def fetch(
        self, interaction: discord.Interaction, allow: str | None = None, block: str | None = None
    ) -> None:
        """Any public GET can carry data out: admins may narrow where agents read (issue 14.9)."""
        await self._set_or_show(
            interaction, "fetch_url domains", {"fetch.allow": allow, "fetch.block": block}, in_both_lists
        )

    @config.command(
        name="mcp", description="Add an MCP server (streamable HTTP) whose tools the agent may use here."
    )
    @app_commands.describe(
        name="A short name: its tools are called <name>__<tool> (1-24 of a-z, 0-9, _ and -)",
        url="The server's streamable-HTTP endpoint, e.g. https://mcp.example.com/mcp",
    )
    async def mcp(
        self, interaction: discord.Interaction, name: str | None = None, url: str | None = None
    ) -> None:
        """Servers are reached through the same SSRF guard as fetch_url; stdio servers, which run a command
        on the host, only come from the operator's MCP_SERVERS_FILE. Remove one with /config reset mcp.<name>."""
        if (name is None) != (url is None):  # one alone was dropped in silence, the list shown instead
            raise Refusal(
                "⚠️ Give both `name` and `url` to add an MCP server (no options lists them; "
                "`/config reset setting:mcp.<name>` removes one)."
            )
        async with self._editing[_gid(interaction)]:  # two added at once could pass the most allowed
            servers = (await self.store.get(_gid(interaction))).mcp
            if name is None or url is None:
                await reply(interaction, mcp_listing(servers))
                return
            check_mcp_name(name, servers, self.bot.services.mcp)
            await check_mcp_url(name, url, self.bot.services.guild_mcp)
            await self._set(interaction, (f"mcp.{name}", url))

    @config.command(name="reset", description="Put one setting, a group, or everything back to the defaults.")
    @app_commands.describe(setting="A setting or group (e.g. tier.medium, limit, tool); empty = everything")
    async def reset(self, interaction: discord.Interaction, setting: str | None = None) -> None:
        guild_id = _gid(interaction)
        text, view = await reset_prompt(self.store, guild_id, setting, self.confirm_seconds)
        await reply(interaction, text, view=view)

    @reset.autocomplete("setting")
    @admins_only
    async def _reset_keys(self, interaction: discord.Interaction, current: str) -> Choices:
        return reset_choices(await self.store.get(interaction.guild_id), current)


async def setup(bot: AgentBot) -> None:
    await bot.add_cog(ConfigCog(bot))
