"""Server settings for /config: validation messages, overrides on defaults, reset, audit, permission."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import discord
import pytest

from bot.cogs.config_support import refusal, reset_choices
from bot.store import (
    GuildSettingsStore,
    SettingError,
    SettingsDefaults,
    SettingsSchema,
    matching,
    open_database,
)
from tests.conftest import StoreTarget

MODELS = ["gpt-4o-mini", "gpt-4o", "llama-3.1-8b", "qwen2.5-72b"]
TOOLS = ["web_search", "fetch", "python", "memory"]
DEFAULTS = SettingsDefaults(
    tiers={"simple": ["llama-3.1-8b"], "medium": ["gpt-4o-mini"], "complex": ["gpt-4o", "gpt-4o-mini"]},
    default_tier="simple",
    max_steps=12,
    disabled_tools=frozenset({"python"}),
)
G = 111
ADMIN = 42


@pytest.fixture
async def settings(store_target: StoreTarget) -> AsyncIterator[GuildSettingsStore]:
    async with await open_database(await store_target()) as db:
        yield GuildSettingsStore(db, SettingsSchema(MODELS, TOOLS), DEFAULTS)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (
            "tier.simple",
            "gpt-5-ultra",
            "Unknown model 'gpt-5-ultra'. Models: gpt-4o, gpt-4o-mini, llama-3.1-8b, qwen2.5-72b",
        ),
        ("tier.simple", [], "needs at least one model"),
        ("tier.simple", "gpt-4o, GPT-4O", "listed twice"),
        ("tier.Big Tier", "gpt-4o", "Unknown tier 'big tier'. Tiers: complex, medium, simple"),
        ("default_tier", "turbo", "Unknown tier 'turbo'. Tiers: complex, medium, simple"),
        ("tool.shell", "on", "Unknown tool 'shell'. Tools: fetch, memory, python, web_search"),
        ("tool.fetch", "maybe", "tool.fetch must be on or off"),
        ("max_steps", 0, "max_steps must be a whole number from 1 to 50"),
        ("max_steps", "ten", "max_steps must be a whole number from 1 to 50"),
        ("limit.requests_per_day", 0, "cannot be 0: write 'unlimited'"),
        ("limit.requests_per_day", 2.5, "must be a whole number"),
        ("limit.cost_per_month_usd", "-3", "above 0"),
        ("limit.cost_per_month_usd", "lots", "must be an amount in USD or 'unlimited'"),
        ("limit.tokens_per_hour", 5, "Unknown limit 'tokens_per_hour'. Limits: requests_per_day"),
        ("role_limit.123.guild_budget_per_month_usd", 5, "Unknown limit"),
        (
            "role_limit.admins.tokens_per_day",
            5,
            "'admins' in 'role_limit.admins.tokens_per_day' is not a Discord id",
        ),
        ("channels", [str(i) for i in range(1000, 1102)], "At most 100 channels; got 102"),
        ("channels", "general", "Discord id"),
        ("persona", "   ", "persona must be text"),
        ("persona", "x" * 4001, "persona is 4001 characters; the most is 4000"),
        ("memory.max_items", 0, "memory.max_items must be a whole number of at least 1"),
        ("colour", "blue", "Unknown setting 'colour'. Settings: tier.<name>, default_tier"),
    ],
)
async def test_bad_values_are_rejected_with_a_message_naming_key_and_allowed_values(
    settings: GuildSettingsStore, key: str, value: object, expected: str
) -> None:
    with pytest.raises(SettingError) as err:
        await settings.set(G, ADMIN, key, value)
    assert expected in str(err.value)
    assert await settings.history(G) == []  # nothing stored, nothing audited


async def test_overrides_apply_on_top_of_defaults(settings: GuildSettingsStore) -> None:
    s = await settings.get(G)
    assert (s.default_tier, list(s.tiers[s.default_tier]), s.max_steps) == ("simple", ["llama-3.1-8b"], 12)
    assert not s.tool_enabled("python") and s.tool_enabled("web_search")

    assert await settings.set(G, ADMIN, "tier.Simple", "qwen2.5-72b, LLAMA-3.1-8B") == [
        "qwen2.5-72b",
        "llama-3.1-8b",
    ]
    await settings.set(G, ADMIN, "tier.medium", ["gpt-4o"])
    await settings.set(G, ADMIN, "default_tier", "medium")
    await settings.set(G, ADMIN, "tool.python", "on")
    await settings.set(G, ADMIN, "tool.web_search", False)
    await settings.set(G, ADMIN, "max_steps", "20")
    await settings.set(G, ADMIN, "channels", "<#2001> <#2002> 2001")
    await settings.set(G, ADMIN, "persona", "You are the Rust server's helper.")
    await settings.set(G, ADMIN, "channel_persona.<#2002>", "Answer in French.")
    await settings.set(G, ADMIN, "memory.auto_store", "off")
    await settings.set(G, ADMIN, "memory.max_age_days", "unlimited")
    await settings.set(G, ADMIN, "limit.tokens_per_day", "1,000,000")
    await settings.set(G, ADMIN, "role_limit.<@&77>.cost_per_month_usd", "$12.50")

    s = await settings.get(G)
    assert s.tiers == {
        "simple": ["qwen2.5-72b", "llama-3.1-8b"],
        "medium": ["gpt-4o"],
        "complex": ["gpt-4o", "gpt-4o-mini"],
    }
    assert (s.default_tier, list(s.tiers[s.default_tier]), s.tiers["simple"][0]) == (
        "medium",
        ["gpt-4o"],
        "qwen2.5-72b",
    )
    assert s.tool_enabled("python") and not s.tool_enabled("web_search")
    assert s.max_steps == 20 and s.channels == (2001, 2002)
    assert s.channel_allowed(2001) and s.channel_allowed(5555, parent_id=2002) and not s.channel_allowed(3000)
    assert s.persona_for(2002) == "Answer in French."
    assert s.persona_for(8888, parent_id=2002) == "Answer in French."  # a thread under the channel
    assert s.persona_for(2001) == "You are the Rust server's helper."
    assert (s.memory_auto_store, s.memory_max_age_days, s.memory_max_items) == (False, None, 1000)
    assert s.limits == {"tokens_per_day": 1_000_000} and s.role_limits == {77: {"cost_per_month_usd": 12.5}}
    assert "role_limit.77.cost_per_month_usd" in s.overrides  # stored under the canonical key

    other = await settings.get(G + 1)  # another server is untouched
    assert other.default_tier == "simple" and other.max_steps == 12 and other.persona is None


async def test_every_change_is_audited_and_shown_newest_first(settings: GuildSettingsStore) -> None:
    await settings.set(G, ADMIN, "max_steps", 5)
    await settings.set(G, ADMIN, "max_steps", 5)  # no change: no audit row
    await settings.set(G, 43, "max_steps", 8)
    await settings.set(G, 43, "persona", "Be brief.")
    changes = await settings.history(G)
    assert [(e.actor_id, e.key, e.old, e.new) for e in changes] == [
        (43, "persona", None, "Be brief."),
        (43, "max_steps", 5, 8),
        (ADMIN, "max_steps", None, 5),
    ]
    assert changes[-1].old_set is False and (await settings.get(G)).max_steps == 8


async def test_reset_one_key_a_group_or_everything(settings: GuildSettingsStore) -> None:
    await settings.set(G, ADMIN, "tier.simple", "gpt-4o")
    await settings.set(G, ADMIN, "tier.complex", "gpt-4o-mini")
    await settings.set(G, ADMIN, "max_steps", 30)
    await settings.set(G, ADMIN, "role_limit.77.tokens_per_day", 10)
    await settings.set(G, ADMIN, "role_limit.77.requests_per_day", 3)
    await settings.set(G, ADMIN, "role_limit.78.requests_per_day", 4)

    assert await settings.reset(G, 9, "max_steps") == ["max_steps"]
    assert (await settings.get(G)).max_steps == 12
    assert await settings.reset(G, 9, "role_limit.77") == [
        "role_limit.77.requests_per_day",
        "role_limit.77.tokens_per_day",
    ]
    assert (await settings.get(G)).role_limits == {78: {"requests_per_day": 4}}
    assert await settings.reset(G, 9, "tier") == ["tier.complex", "tier.simple"]
    assert (await settings.get(G)).tiers == DEFAULTS.tiers
    assert await settings.reset(G, 9, "max_steps") == []  # already at default
    assert await settings.reset(G, 9) == ["role_limit.78.requests_per_day"]
    assert (await settings.get(G)).overrides == {}

    latest = (await settings.history(G, 1))[0]
    assert (latest.actor_id, latest.key, latest.old, latest.new, latest.new_set) == (
        9,
        "role_limit.78.requests_per_day",
        4,
        None,
        False,
    )
    with pytest.raises(SettingError, match="Unknown setting 'colours'"):
        await settings.reset(G, 9, "colours")


async def test_a_default_tier_whose_override_is_reset_runs_the_bots_models(
    settings: GuildSettingsStore,
) -> None:
    await settings.set(G, ADMIN, "tier.medium", "gpt-4o")
    await settings.set(G, ADMIN, "default_tier", "medium")
    await settings.reset(G, ADMIN, "tier.medium")
    s = await settings.get(G)
    assert s.default_tier == "medium" and list(s.tiers[s.default_tier]) == ["gpt-4o-mini"]


def test_only_manage_server_or_administrator_may_change_settings() -> None:
    send_messages, manage_guild, administrator = 0x800, 0x20, 0x8

    def caller(value: int) -> Any:
        return SimpleNamespace(guild_id=G, permissions=discord.Permissions(value))

    assert refusal(caller(send_messages | manage_guild)) is None
    assert refusal(caller(administrator)) is None
    for value in (0, send_messages):
        assert "Manage Server permission" in (refusal(caller(value)) or "")


def test_reset_autocomplete_offers_the_mcp_group_once_a_server_added_one() -> None:
    gs = SettingsDefaults(overrides={"mcp.docs": "https://mcp.example.com/mcp", "max_steps": 5})
    choices = {c.value: c.name for c in reset_choices(gs, "")}  # raised KeyError: 'mcp' before
    assert choices["mcp"] == "every MCP server (mcp)" and "max_steps" in choices and "all" in choices


def test_autocomplete_puts_prefix_matches_first_and_caps_at_25() -> None:
    assert matching(MODELS, "4o") == ["gpt-4o", "gpt-4o-mini"]
    assert matching(MODELS, "gpt")[0] == "gpt-4o"
    assert matching(MODELS, "LLAMA") == ["llama-3.1-8b"]
    assert len(matching([f"m{i}" for i in range(40)], "m")) == 25


async def test_with_the_routers_tier_names_only_those_tiers_are_accepted(store_target: StoreTarget) -> None:
    schema = SettingsSchema(MODELS, TOOLS, known_tiers=("simple", "medium", "complex"))
    async with await open_database(await store_target()) as db:
        store = GuildSettingsStore(db, schema, SettingsDefaults(default_tier="medium"))
        with pytest.raises(SettingError, match=r"Unknown tier 'deep'\. Tiers: complex, medium, simple"):
            await store.set(G, ADMIN, "tier.deep", "gpt-4o")
        await store.set(G, ADMIN, "tier.Complex", "gpt-4o, qwen2.5-72b")
        await store.set(G, ADMIN, "default_tier", "simple")  # a router tier with no server override
        s = await store.get(G)
        assert (s.default_tier, s.tiers) == ("simple", {"complex": ["gpt-4o", "qwen2.5-72b"]})
        await store.reset(G, ADMIN, "default_tier")
        assert (await store.get(G)).default_tier == "medium"


async def test_research_tiers_and_the_reader_are_validated_and_sit_on_the_bots_defaults(
    store_target: StoreTarget,
) -> None:
    schema = SettingsSchema(MODELS, TOOLS, known_tiers=("simple", "medium", "complex"))
    defaults = SettingsDefaults(default_tier="medium", research={"complex": "medium"}, reader=True)
    async with await open_database(await store_target()) as db:
        store = GuildSettingsStore(db, schema, defaults)
        s = await store.get(G)
        assert (s.research, s.reader) == ({"complex": "medium"}, True)
        with pytest.raises(
            SettingError, match=r"research.medium must be a tier weaker than medium \(simple\)"
        ):
            await store.set(G, ADMIN, "research.medium", "complex")
        with pytest.raises(SettingError, match="Tier 'simple' has no weaker tier to research on"):
            await store.set(G, ADMIN, "research.simple", "off")
        with pytest.raises(SettingError, match="reader must be on or off"):
            await store.set(G, ADMIN, "reader", "sometimes")
        await store.set(G, ADMIN, "research.complex", "off")
        await store.set(G, ADMIN, "research.medium", "simple")
        await store.set(G, ADMIN, "reader", "off")
        s = await store.get(G)
        assert (s.research, s.reader) == ({"complex": None, "medium": "simple"}, False)
        await store.reset(G, ADMIN, "research")
        assert (await store.get(G)).research == {"complex": "medium"}
    async with await open_database(await store_target()) as db:  # READER_MODEL=off wins
        store = GuildSettingsStore(db, schema, SettingsDefaults(reader=False))
        await store.set(G, ADMIN, "reader", "on")
        assert (await store.get(G)).reader is False
