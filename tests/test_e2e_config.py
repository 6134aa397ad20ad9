"""/config end to end: the real bot, the fake Discord and the scripted LLM over 127.0.0.1, a real SQLite file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_interactions import build_command_interaction
from tests.fakes.discord_server import FakeDiscord, FakeGuild, InteractionRecord, MessageRecord
from tests.fakes.llm_server import FakeLLM, text

MANAGE_GUILD = 1 << 5
NO_PERMISSIONS = 0


@pytest.fixture
def guild() -> FakeGuild:
    g = FakeGuild.create("Lab", channels=("general", "other"), members=("alice", "bob"), admins=("admin",))
    g.add_role("Researchers")
    g.add_role("Mods", MANAGE_GUILD)
    g.add_member("mod", roles=[g.role("Mods")])
    return g


def flat(msg: MessageRecord) -> str:
    """Everything a reader sees in the message: its text and every part of its embeds."""
    parts = [msg.content]
    for e in msg.embeds:
        parts += [e.get("title") or "", e.get("description") or ""]
        parts += [f"{f['name']}\n{f['value']}" for f in e.get("fields") or []]
        parts.append((e.get("footer") or {}).get("text") or "")
    return "\n".join(p for p in parts if p)


async def answer(fake: FakeDiscord, inter: InteractionRecord) -> MessageRecord:
    await fake.wait_for(
        lambda: inter.original_message_id and flat(fake.message(inter.original_message_id)),
        what=f"the reply to /{inter.command or inter.custom_id}",
    )
    return fake.message(inter.original_message_id)  # type: ignore[arg-type]


async def run(
    fake: FakeDiscord,
    guild: FakeGuild,
    command: str,
    options: dict[str, Any] | None = None,
    *,
    user: str = "admin",
    permissions: int | None = None,
) -> MessageRecord:
    inter = fake.inject_interaction(
        command, options or {}, user=user, channel=guild.channel("general"), permissions=permissions
    )
    msg = await answer(fake, inter)
    assert msg.ephemeral, f"/{command} answered publicly: {msg.content!r}"
    assert msg.allowed_mentions is not None and msg.allowed_mentions.get("parse") == []
    return msg


async def click(
    fake: FakeDiscord, msg: MessageRecord, label: str, user: str = "admin", permissions: int | None = None
) -> InteractionRecord:
    button = next(c for row in msg.components for c in row["components"] if c.get("label") == label)
    inter = fake.inject_component(button["custom_id"], message=msg, user=user, permissions=permissions)
    await fake.wait_for(lambda: inter.responses, what=f"the answer to clicking {label}")
    return inter


def autocomplete(
    fake: FakeDiscord,
    guild: FakeGuild,
    command: str,
    options: dict[str, Any],
    focused: str,
    *,
    user: str = "admin",
) -> InteractionRecord:
    """What Discord sends while an admin types in ``focused`` (the fake has no helper for type 4 yet)."""
    record = build_command_interaction(
        fake.state,
        command=command,
        options=options,
        member=guild.member(user),
        guild=guild,
        channel=guild.channel("general"),
        permissions=None,
        locale="en-US",
        require_registered=True,
    )
    record.type = record.payload["type"] = 4
    leaf = record.payload["data"]["options"]
    while leaf and leaf[0]["type"] in (1, 2):
        leaf = leaf[0]["options"]
    next(o for o in leaf if o["name"] == focused)["focused"] = True
    fake.state.dispatch("INTERACTION_CREATE", record.payload, intent=0)
    fake.state.changed()
    return record


async def choices(fake: FakeDiscord, record: InteractionRecord) -> list[dict[str, Any]]:
    await fake.wait_for(lambda: record.responses, what="autocomplete choices")
    assert record.responses[0]["type"] == 8
    return record.responses[0]["data"]["choices"]


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_config_admin_changes_show_in_show_with_the_audit_log(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    researchers = guild.role("Researchers")
    admin = guild.member("admin")
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        tier = await run(fake, guild, "config tier", {"tier": "complex", "models": "GPT-4o, gpt-4o-mini"})
        limit = await run(fake, guild, "config limits", {"limit": "tokens_per_day", "value": "5,000"})
        role = await run(
            fake,
            guild,
            "config limits",
            {"limit": "requests_per_day", "value": "unlimited", "role": researchers},
        )
        tool = await run(fake, guild, "config tools", {"tool": "web_search", "enabled": False})
        mod = await run(fake, guild, "config max-steps", {"steps": 7}, user="mod")  # Manage Server via a role
        show = await run(fake, guild, "config show")
        gs = await bot.services.guild_settings.get(guild.id)
        history = await bot.services.guild_settings.history(guild.id)
    assert tier.content == "✅ `tier.complex`: `gpt-4o-mini` → `gpt-4o`, `gpt-4o-mini`"
    assert limit.content == "✅ tokens per day: 200,000 → 5,000"
    assert role.content == f"✅ <@&{researchers.id}> requests per day: no role limit → unlimited"
    assert tool.content == "✅ `tool.web_search`: on → off"
    assert mod.content == "✅ `max_steps`: 12 → 7"
    # Stored as validated, canonical values.
    assert gs.tiers["complex"] == ["gpt-4o", "gpt-4o-mini"]
    assert gs.limits == {"tokens_per_day": 5000}
    assert gs.role_limits == {researchers.id: {"requests_per_day": None}}
    assert not gs.tool_enabled("web_search") and gs.tool_enabled("calculator")
    assert gs.max_steps == 7
    assert len(history) == 5
    # /config show: the effective settings and the audit lines, in one embed within Discord's limits.
    shown = flat(show)
    assert "**complex**: `gpt-4o`, `gpt-4o-mini` *(set here)*" in shown
    assert "tokens per day: **5,000** *(set here)*" in shown
    assert "requests per day: **50**" in shown  # untouched limits show the bot's default
    assert f"<@&{researchers.id}>: requests per day unlimited" in shown
    assert "Off: `web_search`" in shown and "`calculator`" in shown.split("Off:")[0]
    assert "Max steps: **7** *(set here)*" in shown
    recent = shown.split("Recent changes\n", 1)[1]
    lines = recent.splitlines()
    assert lines[0].endswith(f"<@{guild.member('mod').id}> `max_steps`: default → `7`")
    assert f"<@{admin.id}> `tool.web_search`: default → off" in lines[1]
    assert f"<@{admin.id}> tokens per day: default → 5,000" in recent
    assert all(line.startswith("<t:") for line in lines[:5])


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_config_member_without_manage_server_is_refused_and_nothing_changes(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("config tier", {"tier": "simple", "models": "gpt-4o"}),
        ("config limits", {"limit": "cost_per_month_usd", "value": "unlimited"}),
        ("config tools", {"tool": "run_python", "enabled": False}),
        ("config channels", {"action": "clear"}),
        ("config persona", {"text": "Be rude."}),
        ("config memory", {"auto_store": False}),
        ("config reset", {}),
        ("config show", {}),
    ]
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        store = bot.services.guild_settings
        for command, options in attempts:
            plain = await run(fake, guild, command, options, user="bob")
            # The default permission is only a default: even an admin's interaction carrying no
            # Manage Server bit (a re-granted command) is refused by the handler itself.
            stripped = await run(fake, guild, command, options, user="admin", permissions=NO_PERMISSIONS)
            for msg in (plain, stripped):
                assert msg.content == (
                    "⛔ You need the Manage Server permission to change agentbot's settings on this server."
                ), command
                assert not msg.embeds and not msg.components
        assert (await store.get(guild.id)).overrides == {}
        assert await store.history(guild.id) == []
        # The reset button checks again when clicked.
        await run(fake, guild, "config max-steps", {"steps": 5})
        confirm = await run(fake, guild, "config reset")
        refused = await click(fake, confirm, "Reset", permissions=NO_PERMISSIONS)
        assert "Manage Server" in fake.message(refused.original_message_id).content  # type: ignore[arg-type]
        assert (await store.get(guild.id)).overrides == {"max_steps": 5}
        assert len(await store.history(guild.id)) == 1
        # The command is registered with Manage Server as its default permission, server-only.
        registered = next(c for c in fake.commands(guild) if c["name"] == "config")
        assert int(registered["default_member_permissions"]) == MANAGE_GUILD
        assert registered.get("dm_permission") is False or registered.get("contexts") == [0]


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_config_bad_values_are_rejected_with_the_key_and_what_is_allowed(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    cases: list[tuple[str, dict[str, Any], list[str]]] = [
        (
            "config tier",
            {"tier": "medium", "models": "gpt-4o-mini, gpt-9-imaginary"},
            # Every chat model the price package knows is allowed: more than a message lists.
            ["Unknown model 'gpt-9-imaginary'", "Models: codex-mini, gpt-4.1,", "gpt-4o-mini", "more"],
        ),
        (
            "config tier",
            {"tier": "fast", "models": "gpt-4o"},
            ["Unknown tier `fast`. Tiers: complex, medium, simple."],
        ),
        (
            "config limits",
            {"limit": "tokens_per_day", "value": "lots"},
            ["limit.tokens_per_day must be a whole number or 'unlimited'; got 'lots'"],
        ),
        (
            "config limits",
            {"limit": "cost_per_month_usd", "value": "0"},
            ["limit.cost_per_month_usd cannot be 0", "'unlimited'"],
        ),
        (
            "config limits",
            {"limit": "guild_budget_per_month_usd", "value": "5", "role": "Researchers"},
            ["server budget covers the whole server"],
        ),
        ("config max-steps", {"steps": 99}, ["max_steps must be a whole number from 1 to 50; got 99"]),
        ("config tools", {"tool": "teleport", "enabled": False}, ["Unknown tool 'teleport'", "calculator"]),
        ("config default-tier", {"tier": "ultra"}, ["Unknown tier 'ultra'", "complex", "medium", "simple"]),
        # Several keys at once: a bad one means none is stored.
        (
            "config memory",
            {"auto_store": False, "max_items": "-3"},
            ["memory.max_items must be a whole number of at least 1, or 'unlimited'"],
        ),
        ("config persona", {"text": "x" * 4001}, ["persona is 4001 characters; the most is 4000"]),
        ("config channels", {"action": "add"}, ["Pick the channel to add"]),
        ("config reset", {"setting": "colour"}, ["Unknown setting 'colour'", "tier.<name>"]),
    ]
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        for command, options, expected in cases:
            if isinstance(options.get("role"), str):
                options["role"] = guild.role(options["role"])
            msg = await run(fake, guild, command, options)
            assert msg.content.startswith("⚠️"), (command, msg.content)
            for part in expected:
                assert part in msg.content, (command, part, msg.content)
        store = bot.services.guild_settings
        assert (await store.get(guild.id)).overrides == {}
        assert await store.history(guild.id) == []


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_config_tools_persona_and_steps_reach_the_next_research(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    general = guild.channel("general")
    llm.script(text("Arr, 42."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        await run(fake, guild, "config tools", {"tool": "calculator", "enabled": False})
        await run(fake, guild, "config persona", {"text": "Answer like a pirate.", "channel": general})
        await run(fake, guild, "config persona", {"text": "Never guess.", "channel": guild.channel("other")})
        await run(fake, guild, "config max-steps", {"steps": 3})
        fake.inject_interaction("research", {"task": "What is 6*7?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: m.content == "Arr, 42.", within=15)
        await wait_idle(fake, bot)
        header = fake.messages(thread)[0].content
        cleared = await run(fake, guild, "config persona", {"channel": general, "clear": True})
        again = await run(fake, guild, "config persona", {"channel": general, "clear": True})
        gs = await bot.services.guild_settings.get(guild.id)
    assert cleared.content == f"✅ Persona for <#{general.id}> and its threads removed."
    assert again.content == f"No persona is set for <#{general.id}> and its threads; nothing changed."
    assert gs.persona_for(general.id) is None and gs.persona_for(guild.channel("other").id) == "Never guess."
    offered = [t["function"]["name"] for t in llm.requests[0]["tools"]]
    assert "calculator" not in offered and "current_time" in offered
    system = "\n".join(m["content"] for m in llm.requests[0]["messages"] if m["role"] == "system")
    assert "Answer like a pirate." in system and "Never guess." not in system
    assert "up to 3 steps" in header


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_config_channels_limit_where_research_is_answered(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    general, other = guild.channel("general"), guild.channel("other")
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        added = await run(fake, guild, "config channels", {"action": "add", "channel": other})
        inter = fake.inject_interaction("research", {"task": "anything"}, user="alice", channel=general)
        refusal = await answer(fake, inter)
        missing = await run(fake, guild, "config channels", {"action": "remove", "channel": general})
        cleared = await run(fake, guild, "config channels", {"action": "clear"})
        gs = await bot.services.guild_settings.get(guild.id)
    assert added.content == f"✅ `channels`: every channel → <#{other.id}>"
    assert (
        refusal.ephemeral
        and "not enabled in this channel" in refusal.content
        and f"<#{other.id}>" in refusal.content
    )
    assert missing.content == f"⚠️ <#{general.id}> is not in the list. Channels: <#{other.id}>."
    assert cleared.content == f"✅ `channels`: <#{other.id}> → every channel"
    assert gs.channels == () and gs.channel_allowed(general.id)
    assert llm.requests == [] and fake.threads(parent=general) == []


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_config_lowered_user_limit_refuses_the_next_research(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    general = guild.channel("general")
    llm.script(text("first answer", prompt_tokens=300, completion_tokens=40))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        fake.inject_interaction("research", {"task": "first"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: m.content == "first answer", within=15)
        await wait_idle(fake, bot)
        await run(fake, guild, "config limits", {"limit": "tokens_per_day", "value": "300"})
        inter = fake.inject_interaction("research", {"task": "second"}, user="alice", channel=general)
        refusal = await answer(fake, inter)
    assert refusal.ephemeral
    assert refusal.content.startswith(
        "⛔ Daily token limit reached: 340 of 300 tokens used or reserved today."
    )
    assert "It resets <t:" in refusal.content
    assert len(fake.threads(parent=general)) == 1 and len(llm.requests) == 1


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_config_reset_asks_for_confirmation_then_resets(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        store = bot.services.guild_settings
        cog = bot.get_cog("ConfigCog")
        cog.confirm_seconds = -1  # a confirmation clicked after it expired
        await run(fake, guild, "config max-steps", {"steps": 4})
        stale = await run(fake, guild, "config reset", {"setting": "max_steps"})
        await click(fake, stale, "Reset it")
        assert fake.message(stale.id).content.startswith("This confirmation has expired; nothing changed.")
        assert (await store.get(guild.id)).max_steps == 4
        cog.confirm_seconds = 300
        await run(fake, guild, "config tools", {"tool": "web_search", "enabled": False})
        await run(fake, guild, "config tools", {"tool": "fetch_url", "enabled": False})
        await run(fake, guild, "config limits", {"limit": "requests_per_day", "value": "10"})
        await run(fake, guild, "config memory", {"auto_store": False, "max_items": "unlimited"})

        tools_only = await run(fake, guild, "config reset", {"setting": "tool"})
        assert "Reset every tool switch to the bot's defaults? This removes 2 overrides" in tools_only.content
        assert (await store.get(guild.id)).tools == {"web_search": False, "fetch_url": False}  # not yet
        done = await click(fake, tools_only, "Reset it")
        edited = fake.message(done.original_message_id)  # type: ignore[arg-type]
        assert edited.id == tools_only.id and not edited.components
        assert edited.content == "✅ Reset 2 settings to the defaults: `tool.fetch_url`, `tool.web_search`"
        assert set((await store.get(guild.id)).overrides) == {
            "limit.requests_per_day",
            "memory.auto_store",
            "memory.max_items",
            "max_steps",
        }

        everything = await run(fake, guild, "config reset")
        await click(fake, everything, "Cancel")
        assert fake.message(everything.id).content == "Cancelled; nothing changed."
        assert len((await store.get(guild.id)).overrides) == 4

        # A server with far more settings than one embed holds: /config show still answers, clipped.
        for i in range(40):
            await store.set(guild.id, 1, f"channel_persona.{10**17 + i}", f"Persona {i}: " + "long " * 790)
            await store.set(guild.id, 1, f"role_limit.{10**17 + i}.tokens_per_day", 1000 + i)
        for i in range(12):
            await store.set(guild.id, 1, f"channel_persona.{2 * 10**17 + i}", f"Extra persona {i}")
        big = await run(fake, guild, "config show")
        embed = big.embeds[0]
        size = sum(len(embed.get(k) or "") for k in ("title", "description"))
        size += sum(len(f["name"]) + len(f["value"]) for f in embed["fields"])
        size += len(embed["footer"]["text"])
        assert size <= 6000 and all(len(f["value"]) <= 1024 for f in embed["fields"])
        assert (
            "Recent changes" in [f["name"] for f in embed["fields"]] or "left out" in embed["footer"]["text"]
        )
        assert "more" in flat(big)  # clipped lists say how many lines were left out

        everything = await run(fake, guild, "config reset", {"setting": "all"})
        await click(fake, everything, "Reset")
        confirmation, result = fake.message(everything.id).contents[-2:]  # after "thinking…"
        assert f"This removes {4 + 40 + 40 + 12} overrides" in confirmation and confirmation.endswith(" more")
        assert result.startswith("✅ Reset 96 settings to the defaults: ") and result.endswith(" more")
        gs = await store.get(guild.id)
        assert gs.overrides == {} and gs.memory_auto_store is True and gs.max_steps == 12
        nothing = await run(fake, guild, "config reset", {"setting": "limit.requests_per_day"})
        assert nothing.content == "Nothing to reset: requests per day is already at the bot's default."
        assert not nothing.components
        show = flat(await run(fake, guild, "config show"))
        history = await store.history(guild.id, 100)
    assert {e.key for e in history[:96]} >= {
        "memory.max_items",
        "memory.auto_store",
        "limit.requests_per_day",
    }
    assert all(not e.new_set for e in history[:96])  # every override removed, each with its audit row
    recent = [x for x in show.split("Recent changes\n", 1)[1].splitlines() if x.startswith("<t:")]
    assert len(recent) >= 5 and all(x.endswith("→ default") for x in recent)


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_config_autocomplete_offers_tiers_models_and_tools(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    async with running_bot(fake, llm, tmp_path, guild):
        await run(fake, guild, "config tools", {"tool": "web_search", "enabled": False})
        every_model = await choices(
            fake, autocomplete(fake, guild, "config tier", {"tier": "x", "models": ""}, "models")
        )
        second = await choices(
            fake,
            autocomplete(fake, guild, "config tier", {"tier": "x", "models": "gpt-4o-mini, GPT-4"}, "models"),
        )
        tiers = await choices(fake, autocomplete(fake, guild, "config default-tier", {"tier": "m"}, "tier"))
        tools = await choices(
            fake, autocomplete(fake, guild, "config tools", {"tool": "web", "enabled": True}, "tool")
        )
        resets = await choices(
            fake, autocomplete(fake, guild, "config reset", {"setting": "tool"}, "setting")
        )
        members = await choices(
            fake,
            autocomplete(fake, guild, "config tier", {"tier": "x", "models": "gpt"}, "models", user="bob"),
        )
    assert len(every_model) == 25  # more models are known than Discord can show
    values = [c["value"] for c in second]
    assert values and all(v.startswith("gpt-4o-mini, gpt-4") for v in values)
    assert "gpt-4o-mini, gpt-4o" in values and "gpt-4o-mini, gpt-4o-mini" not in values
    assert [c["value"] for c in tiers] == ["medium", "complex", "simple"]  # prefix matches first
    assert tiers[0]["name"] == "medium: gpt-4o-mini"
    assert tools == [{"name": "web_search (off)", "value": "web_search"}]
    assert [c["value"] for c in resets] == ["tool", "tool.web_search"]
    assert members == []


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_config_routing_turns_research_tiers_and_the_reader_off_for_the_next_research(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    tiers = {"simple": ("gpt-4.1-nano",), "medium": ("gpt-5-mini",), "complex": ("gpt-5",)}
    general = guild.channel("general")
    llm.responder = lambda body: text(f"answered by {body['model']}")
    task = "Compare five open-source vector databases on speed, filtering, licence and hosting, with sources"
    async with running_bot(fake, llm, tmp_path, guild, tiers_table=tiers) as bot:
        before = await run(fake, guild, "config routing")
        changed = await run(fake, guild, "config routing", {"complex_research": "off", "page_reader": False})
        shown = flat(await run(fake, guild, "config show"))
        fake.inject_interaction("research", {"task": task, "tier": "complex"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: "answered by" in m.content, within=15)
        await wait_idle(fake, bot)
        gs = await bot.services.guild_settings.get(guild.id)
        denied = await run(
            fake, guild, "config routing", {"page_reader": True}, user="bob", permissions=NO_PERMISSIONS
        )
    assert "`research.complex`: medium researches, complex writes" in before.content
    assert "`reader`: on" in before.content
    assert (
        "✅ `research.complex`: medium researches, complex writes → off (complex does its own research)"
        in (changed.content)
    )
    assert "✅ `reader`: on → off" in changed.content
    assert "Complex runs: off (complex does its own research) *(set here)*" in shown
    assert "Page reader: **off** *(set here)*" in shown
    # The complex run is served by the complex model alone: no researcher, no hand-over.
    assert {r["model"] for r in llm.requests} == {"gpt-5"}
    assert any("answered by gpt-5" in m.content for m in fake.messages(thread))
    assert gs.research == {"complex": None} and gs.reader is False
    assert (
        denied.content.startswith("⛔") and (await bot.services.guild_settings.get(guild.id)).reader is False
    )
