"""Members and admins using files, edits, MCP tools, memory import and thread manners as README says,
where the sixth black-box QA pass of the bot looked: the real discord.py bot on the fake Discord, the
scripted model on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text
from tests.test_e2e_attachments import user_text


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"), admins=("admin",))


async def test_several_files_in_a_reply_and_one_just_over_the_limit_are_told_apart(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Alice attaches a JSON, a YAML, a script and a CSV a little over the 10 KB per-file limit: the
    refusal read "it is 10 KB, over the 10 KB left for this message" (the same number twice, and a
    message limit she was not over)."""
    llm.script(text("Read them."), text("Got three."))
    big = b"a,b\n" + b"1,2\n" * 2600  # 10,404 bytes: 10.2 KB
    files = [
        ("cfg.json", b'{"a": 1}'),
        ("ci.yaml", b"on: push\n"),
        ("run.py", b"print(1)\n"),
        ("big.csv", big),
    ]
    async with running_bot(fake, llm, tmp_path, guild, ATTACHMENT_MAX_MB=10 / 1024) as agentbot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "files"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: m.content == "Read them.", within=15)
        await wait_idle(fake, agentbot)
        fake.inject_message(thread, "alice", "These", attachments=files)
        await fake.wait_for_message(thread, lambda m: m.content == "Got three.", within=15)
        await wait_idle(fake, agentbot)
    (refused,) = [m.content for m in fake.messages(thread) if "📎 Not read" in m.content]
    told = user_text(llm.requests[1])
    assert all(f"{n} (" in told for n in ("cfg.json", "ci.yaml", "run.py")), told
    assert "big.csv: it is 10.2 KB, over the 10 KB limit per file" in refused, refused
