"""Issue 14.9: admins restrict fetch_url per server with a domain allow-list or block-list (/config fetch).

The rules match host names in their IDNA (punycode) form whatever the case or a trailing dot, cover
subdomains and nothing else, are checked on every redirect hop before connecting, and reach fetch_url
through the running bot's per-turn context (real discord.py, fake Discord, page server on 127.0.0.1).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from agent.messages import ToolCall
from agent.tools.domains import DomainPolicy, normalise_domain
from agent.tools.fetch import FetchSettings, PageFetcher, fetch_tools
from agent.tools.registry import ToolContext, ToolRegistry
from bot.store.settings_schema import SettingError, SettingsSchema
from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text, tool_call
from tests.fakes.web_server import FakeWeb
from tests.test_security_memory import research, run_command
from tests.test_ssrf_guard import RecordingBackend


@pytest.mark.parametrize(
    ("rule", "url", "blocked"),
    [
        ("example.com", "https://example.com/x", True),
        ("example.com", "https://DOCS.Example.COM./x", True),
        ("*.example.com", "https://a.b.example.com/", True),
        ("example.com", "https://badexample.com/", False),
        ("example.com", "https://example.com.evil.net/", False),
        ("BÜCHER.de", "https://xn--bcher-kva.de/", True),
        ("xn--bcher-kva.de", "https://shop.bücher.de/", True),
        ("https://Bücher.DE/path", "http://BÜCHER.de:8080/", True),
        ("203.0.113.7", "http://203.0.113.7/", True),
        ("203.0.113.7", "http://203.0.113.70/", False),
    ],
)
def test_security_domain_rules_match_subdomains_idna_and_case(rule: str, url: str, blocked: bool) -> None:
    assert (DomainPolicy.of(block=[rule]).problem(httpx.URL(url)) is not None) is blocked
    assert (DomainPolicy.of(allow=[rule]).problem(httpx.URL(url)) is None) is blocked


def test_security_domain_settings_are_validated_and_normalised() -> None:
    schema = SettingsSchema(known_models=["m"], known_tools=["fetch_url"])
    assert schema.validate("fetch.block", "Example.COM, *.BÜCHER.de  example.com") == [
        "example.com",
        "xn--bcher-kva.de",
    ]
    assert schema.validate("fetch.allow", "none") == []
    for bad in ("bad!name.com", "*", "http://", "a" * 300 + ".com"):
        with pytest.raises(SettingError, match=r"fetch\.block"):
            schema.validate("fetch.block", bad)
    with pytest.raises(SettingError, match="at most 100"):
        schema.validate("fetch.allow", [f"d{i}.example" for i in range(101)])


async def test_security_redirects_are_checked_against_the_lists(web: FakeWeb) -> None:
    """allowed.test redirects to blocked.test (and to a name off the allow-list): refused before any
    connection to it, whichever list refuses."""

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host.endswith(".test") else []

    backend = RecordingBackend()
    fetcher = PageFetcher(FetchSettings(allow_loopback=True, timeout=5), resolver=resolver, backend=backend)
    registry = ToolRegistry(fetch_tools(fetcher))
    start = f"http://allowed.test:{web.port}/redirect-to?url=http://www.BLOCKED.test.:{web.port}/article"

    async def fetch(policy: DomainPolicy) -> str:
        ctx = ToolContext(services={"fetch_domains": policy})
        outcome = await registry.execute(ToolCall("c", "fetch_url", json.dumps({"url": start})), ctx)
        assert outcome.is_error
        return outcome.output

    try:
        assert "blocked.test" in await fetch(DomainPolicy.of(block=["blocked.test"]))
        assert "may only read allowed.test" in await fetch(DomainPolicy.of(allow=["allowed.test"]))
        hits = web.hits("/article")
        assert hits == 0 and web.hits("/redirect-to") == 2  # the first hop only, each time
        ok = await registry.execute(
            ToolCall("c", "fetch_url", json.dumps({"url": start})),
            ToolContext(services={"fetch_domains": DomainPolicy.of(allow=["test"])}),
        )
        assert not ok.is_error and "Otters of the Baltic" in ok.output
    finally:
        await fetcher.aclose()


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice",), admins=("admin",))


async def test_security_config_fetch_block_reaches_fetch_url_in_a_run(
    fake: FakeDiscord,
    llm: FakeLLM,
    guild: FakeGuild,
    web: FakeWeb,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FETCH_ALLOW_LOOPBACK", "1")
    page = f"http://LOCALHOST.:{web.port}/article"  # localhost, spelled as a page might
    llm.script(tool_call("fetch_url", {"url": page}), text("Could not read it."))
    llm.script(tool_call("fetch_url", {"url": page}), text("Read it."))
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        member = await run_command(fake, guild, "config fetch", {"block": "localhost"}, "alice")
        assert "Manage Server" in member.content
        set_ = await run_command(fake, guild, "config fetch", {"block": "LocalHost"}, "admin")
        assert "`localhost`" in set_.content
        shown = await run_command(fake, guild, "config fetch", {}, "admin")
        assert "any public domain" in shown.content and "`localhost`" in shown.content

        thread = await research(fake, guild, "Read the otter page", "alice")
        await wait_idle(fake, bot)
        said = "\n".join(m.content for m in fake.messages(thread))
        assert "blocked localhost" in said and web.hits("/article") == 0

        lifted = await run_command(fake, guild, "config fetch", {"block": "none"}, "admin")
        assert "→ none" in lifted.content
        assert (
            normalise_domain("localhost") not in (await bot.services.guild_settings.get(guild.id)).fetch_block
        )
        await research(fake, guild, "Read the otter page again", "alice")
        await wait_idle(fake, bot)
        assert web.hits("/article") == 1  # another server setting, the next turn: no restart needed
