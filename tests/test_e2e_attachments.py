"""Attachments end to end (issue 17.2): the real discord.py client against the fake Discord, which serves
attachment URLs on 127.0.0.1; the scripted LLM shows what the agent was given."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text, tool_call
from tests.fakes.sample_files import PNG_1X1, make_pdf

CSV = b"month,units\njan,12\nfeb,30\n"


def user_message(request: dict[str, Any]) -> dict[str, Any]:
    return [m for m in request["messages"] if m["role"] == "user"][-1]


def user_text(request: dict[str, Any]) -> str:
    content = user_message(request)["content"]
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content if p.get("type") == "text")


def images_in(request: dict[str, Any]) -> list[str]:
    content = user_message(request)["content"]
    if isinstance(content, str):
        return []
    return [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]


def tool_results(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


async def test_e2e_a_pdf_on_research_and_a_csv_and_image_in_a_reply_reach_a_vision_model(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    pdf = make_pdf(["Quarterly revenue grew 14 percent", "Costs were flat"])
    llm.script(
        tool_call("read_file", {"path": "report.pdf.txt"}),
        text("Revenue grew 14 percent."),
        tool_call("read_file", {"path": "sales.csv"}),
        text("February sold 30 units; the image is a single pixel."),
    )
    async with running_bot(fake, llm, tmp_path, guild) as bot:  # gpt-4o-mini: it sees images
        general = guild.channel("general")
        fake.inject_interaction(
            "research",
            {"task": "Summarise the report", "file": ("report.pdf", pdf)},
            user="alice",
            channel=general,
        )
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: "Revenue grew" in m.content, within=20)
        await wait_idle(fake, bot)
        fake.inject_message(
            thread, "alice", "Now these", attachments=[("sales.csv", CSV), ("chart.png", PNG_1X1)]
        )
        await fake.wait_for_message(thread, lambda m: "February sold" in m.content, within=20)
        await wait_idle(fake, bot)
        session = await bot.services.sessions.by_thread(thread.id)
        assert session is not None
        history = await bot.services.sessions.history(session.id)
    first, after_read, second, after_csv = llm.requests
    told = user_text(first)
    assert "Summarise the report" in told and "report.pdf (" in told and "report.pdf.txt" in told
    assert "Quarterly revenue grew 14 percent" in tool_results(after_read)[-1]  # read_file reads the text
    told = user_text(second)
    assert "sales.csv (" in told and "chart.png (" in told and "shown to you" in told
    assert images_in(second) == ["data:image/png;base64," + base64.b64encode(PNG_1X1).decode()]
    assert "feb,30" in tool_results(after_csv)[-1]
    assert images_in(after_csv)  # the image stays for every step of its turn
    # The stored history keeps the text, not the image bytes (bounded), and says it was shown once.
    stored = json.dumps(history)
    assert (
        base64.b64encode(PNG_1X1).decode() not in stored and "shown to the model in that turn only" in stored
    )
    shown = [m.content for m in fake.messages(thread)]
    assert not any("📎 Not read" in c or "Files written" in c for c in shown)  # nothing refused or echoed


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_a_model_that_cannot_see_is_told_so(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("I cannot see it, but it is saved."))
    async with running_bot(fake, llm, tmp_path, guild, models=("llama3.1",)) as bot:
        general = guild.channel("general")
        fake.inject_interaction(
            "research",
            {"task": "What is in this?", "file": ("photo.png", PNG_1X1)},
            user="alice",
            channel=general,
        )
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: "saved" in m.content, within=20)
        await wait_idle(fake, bot)
        session = await bot.services.sessions.by_thread(thread.id)
    (req,) = llm.requests
    assert req["model"] == "llama3.1"
    assert images_in(req) == [] and "photo.png (" in user_text(req) and "cannot see images" in user_text(req)
    assert session is not None
    assert (tmp_path / "workspaces" / session.id / "photo.png").read_bytes() == PNG_1X1


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_a_too_big_file_and_an_unsupported_type_are_refused_in_the_thread(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("Only the notes arrived."))
    async with running_bot(fake, llm, tmp_path, guild, ATTACHMENT_MAX_MB=0.01) as bot:  # 10 KB a file
        general = guild.channel("general")
        msg = fake.inject_message(
            general,
            "alice",
            f"<@{bot.user.id}> look at these",
            attachments=[
                ("notes.md", b"# Notes\nkeep me\n"),
                ("big.csv", b"a,b\n" + b"1,2\n" * 5000),
                ("tool.exe", b"MZ\x90\x00\x03" + bytes(200)),
                ("<@&123456789012345678>**loud**.bin", b"\x00\x01" * 50),
            ],
        )
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: "Only the notes" in m.content, within=20)
        await wait_idle(fake, bot)
        session = await bot.services.sessions.by_thread(thread.id)
    assert msg is not None
    (refused,) = [m.content for m in fake.messages(thread) if "📎 Not read" in m.content]
    assert "big.csv: it is 20 KB, over the 10 KB" in refused
    assert "tool.exe: unsupported type" in refused
    # An uploader's name is shown as typed, not rendered as a role mention or bold text.
    assert "<@\u200b&123456789012345678>\\*\\*loud\\*\\*.bin: unsupported type" in refused
    told = user_text(llm.requests[0])
    assert "notes.md (" in told and "big.csv: it is 20 KB" in told and "tool.exe: unsupported type" in told
    assert session is not None
    saved = sorted(p.name for p in (tmp_path / "workspaces" / session.id).iterdir())
    assert saved == ["notes.md"]


@pytest.mark.usefixtures("fast_write_window")
async def test_e2e_a_follow_up_file_over_the_workspace_quota_is_refused(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(text("Noted."), text("It did not fit."))
    quota = {"FILES_QUOTA_BYTES": 4096}
    async with running_bot(fake, llm, tmp_path, guild, agent_env=quota) as bot:
        general = guild.channel("general")
        fake.inject_interaction(
            "research",
            {"task": "Keep this", "file": ("a.csv", b"x,y\n" + b"1,2\n" * 700)},
            user="alice",
            channel=general,
        )
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: "Noted." in m.content, within=20)
        await wait_idle(fake, bot)
        fake.inject_message(thread, "alice", "And this", attachments=[("b.csv", b"x,y\n" + b"3,4\n" * 700)])
        await fake.wait_for_message(thread, lambda m: "did not fit" in m.content, within=20)
        await wait_idle(fake, bot)
    (refused,) = [m.content for m in fake.messages(thread) if "📎 Not read" in m.content]
    assert "b.csv: it is 3 KB, over the 1 KB left for this message and the workspace quota" in refused
    assert "b.csv: it is 3 KB" in user_text(llm.requests[1])
