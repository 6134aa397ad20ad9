"""Black-box: memory on a Chroma server (``CHROMA_HOST``, ``chroma run`` from the venv) as members meet it
through the real bot, including the server going away while the bot runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, MemoryEnv, parse_settings
from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.chroma_server import ChromaServer
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text
from tests.test_e2e_memory import research
from tests.test_security_memory import run_command


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"), admins=("admin",))


ANSWER = "Ferries to the north island leave at 7 and 15 o'clock from pier 3, tides permitting."


async def test_blackbox_memory_commands_say_so_when_the_chroma_server_goes_away(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    server = ChromaServer(tmp_path / "chroma").start()
    env = {"CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": server.port}
    llm.script(text(ANSWER), text("Second answer, written while memory was down."))
    try:
        async with running_bot(fake, llm, tmp_path / "bot", guild, MEMORY_ENABLED=True, agent_env=env) as bot:
            assert bot.services.memory is not None, bot.services.memory_error
            await research(fake, guild, "When do ferries leave for the north island?", "alice")
            await wait_idle(fake, bot)
            found = await run_command(fake, guild, "memory search", {"query": "ferry times"}, "alice")
            assert "pier 3" in found.content
            assert not (tmp_path / "bot" / "memory").exists()  # the server holds it, not the data directory

            server.stop()
            for name, options, what in (
                ("memory search", {"query": "ferry times"}, "search memory"),
                ("memory list", {}, "read memory"),
                ("memory stats", {}, "read memory stats"),
                ("memory export", {}, "export memory"),
                ("memory forget", {"query": "ferries"}, "read memory"),
            ):
                msg = await run_command(fake, guild, name, options, "admin")
                assert msg.content.startswith(f"⚠️ Could not {what}:"), (name, msg.content)
                assert "Connect" in msg.content and msg.components == [] and not msg.attachments
            # A run goes on without memory: it is answered, recall and storing fail quietly.
            thread = await research(fake, guild, "When do ferries leave for the north island?", "bob")
            assert any("memory was down" in m for m in thread)
            await wait_idle(fake, bot)
    finally:
        server.stop()


@pytest.mark.parametrize("host", ["http://chroma", "https://chroma.internal", "chroma:8000", "chroma/api"])
def test_blackbox_memory_a_url_in_chroma_host_is_one_line_naming_the_settings(host: str) -> None:
    # "http://chroma" with CHROMA_PORT=8000 failed as "Could not connect to a Chroma server. Are you
    # sure it is running?" while the server ran; "chroma:8000" as "Invalid port: '8000:8000'".
    with pytest.raises(ConfigError) as err:
        parse_settings(MemoryEnv, {"CHROMA_HOST": host, "CHROMA_PORT": "8000"})
    message = str(err.value)
    assert (
        message.startswith(f"CHROMA_HOST={host!r}:") and "CHROMA_PORT" in message and "CHROMA_SSL" in message
    )
    for fine in ("chroma", "10.0.0.5", "::1", "chroma.internal"):
        assert parse_settings(MemoryEnv, {"CHROMA_HOST": fine}).chroma_host == fine
