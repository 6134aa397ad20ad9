"""Per-tool token buckets per user and per server, through the real registry, on an injected clock."""

from __future__ import annotations

import json

import pytest

from agent.config import ConfigError
from agent.messages import ToolCall
from agent.setting_parsers import Rate, parse_rate_limits
from agent.tools.ratelimit import RateLimitGuard
from agent.tools.registry import ToolContext, ToolRegistry, tool
from agent.tools.research import ResearchToolSettings, research_guard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


calls: list[str] = []


@tool
def web_search(query: str) -> str:
    """A stand-in search that records each real call."""
    calls.append(query)
    return f"results for {query}"


@tool
def read_file(path: str) -> str:
    """An unlimited tool."""
    return path


def setup(limits: str = "web_search=3/60", multiplier: float = 2.0) -> tuple[ToolRegistry, Clock]:
    calls.clear()
    clock = Clock()
    guard = RateLimitGuard(parse_rate_limits(limits), server_multiplier=multiplier, clock=clock)
    return ToolRegistry([web_search, read_file], guards=[guard]), clock


async def search(registry: ToolRegistry, guild: str | None, user: str | None, name: str = "web_search"):
    ctx = ToolContext(session_id="s", namespace=guild, user_id=user)
    return await registry.execute(
        ToolCall("c", name, json.dumps({"path": "p"} if name == "read_file" else {"query": "q"})), ctx
    )


async def test_ratelimit_user_bucket_refuses_with_wait_time_and_alternative() -> None:
    registry, _ = setup()
    for _ in range(3):
        assert not (await search(registry, "g1", "alice")).is_error
    refused = await search(registry, "g1", "alice")
    assert refused.is_error
    assert json.loads(refused.output) == {
        "error": "rate limit: web_search is limited to 3 calls per 60 s for each user. Wait 20 s before calling "
        "it again, or continue with another tool or with what you already have."
    }
    assert len(calls) == 3  # the refused call never ran
    assert not (await search(registry, "g1", "alice", "read_file")).is_error  # other tools are unaffected


async def test_ratelimit_tokens_refill_over_time() -> None:
    registry, clock = setup()
    for _ in range(3):
        await search(registry, "g1", "alice")
    clock.now += 19
    assert "Wait 1 s" in (await search(registry, "g1", "alice")).output
    clock.now += 1
    assert not (await search(registry, "g1", "alice")).is_error
    clock.now += 3600  # a long pause refills only up to the bucket size
    results = [(await search(registry, "g1", "alice")).is_error for _ in range(4)]
    assert results == [False, False, False, True]


async def test_ratelimit_users_have_separate_buckets_but_share_the_server_one() -> None:
    registry, _ = setup(multiplier=2.0)  # server: 6 calls per 60 s
    for user in ("alice", "bob"):
        for _ in range(3):
            assert not (await search(registry, "g1", user)).is_error
    refused = await search(registry, "g1", "carol")  # carol has tokens; the server has none left
    assert refused.is_error
    assert "limited to 6 calls per 60 s for this server. Wait 10 s" in refused.output
    assert not (await search(registry, "g2", "carol")).is_error  # another server is untouched


async def test_ratelimit_terminal_mode_without_server_or_user_is_limited_too() -> None:
    registry, _ = setup("web_search=1/10")
    assert not (await search(registry, None, None)).is_error
    assert (await search(registry, None, None)).is_error


async def test_ratelimit_subset_registry_shares_the_guard_and_hides_disabled_tools() -> None:
    registry, _ = setup("web_search=1/60")
    per_server = registry.subset(["web_search"])
    assert not (await search(per_server, "g1", "alice")).is_error
    assert (await search(registry, "g1", "alice")).is_error  # same buckets through either registry
    disabled = await search(per_server, "g1", "alice", "read_file")
    assert disabled.is_error and "unknown tool 'read_file'" in disabled.output


def test_ratelimit_config_parses_and_explains_mistakes() -> None:
    assert parse_rate_limits(" web_search=10/60, fetch_url = 30/60 ,") == {
        "web_search": Rate(10, 60.0),
        "fetch_url": Rate(30, 60.0),
    }
    assert parse_rate_limits("") == {}
    for bad in (
        "web_search=10",
        "web_search:10/60",
        "=1/2",
        "web_search=ten/60",
        "web_search=0/60",
        "web_search=1/0",
    ):
        with pytest.raises(ValueError, match="TOOL_RATE_LIMITS"):
            parse_rate_limits(bad)


def test_ratelimit_settings_from_env() -> None:
    default = ResearchToolSettings.from_env({})
    assert default.rate_limits["web_search"] == Rate(10, 60.0)
    s = ResearchToolSettings.from_env(
        {"TOOL_RATE_LIMITS": "run_python=2/30", "TOOL_RATE_SERVER_MULTIPLIER": "3"}
    )
    guard = research_guard(s)
    assert guard.limits == {"run_python": Rate(2, 30.0)}
    assert guard.server_multiplier == 3.0
    assert research_guard(ResearchToolSettings.from_env({"TOOL_RATE_LIMITS": ""})).limits == {}
    with pytest.raises(ConfigError, match="cannot read 'oops'"):
        ResearchToolSettings.from_env({"TOOL_RATE_LIMITS": "oops"})
    with pytest.raises(
        ConfigError, match=r"TOOL_RATE_SERVER_MULTIPLIER='0\.5': Input should be greater than or equal to 1"
    ):
        ResearchToolSettings.from_env({"TOOL_RATE_SERVER_MULTIPLIER": "0.5"})
