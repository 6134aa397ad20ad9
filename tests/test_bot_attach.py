"""The bot's side of attachments (issue 17.2): which models are shown images, what a turned-off or full
workspace refuses, and what of an image-bearing turn the stored history keeps."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from agent.attachments import IncomingFile
from agent.config import AgentSettings
from agent.messages import ImagePart, Message
from bot.attach import sees_images, take, with_note, without_images
from bot.config import BotSettings

NOWHERE = IncomingFile("notes.md", "http://127.0.0.1:9/notes.md", 10)
"""Never fetched: every test here refuses before downloading."""


def services(http: httpx.AsyncClient | None = None, **env: Any) -> Any:
    aliases = {f.alias for f in BotSettings.model_fields.values()}
    bot = {k: v for k, v in env.items() if k in aliases}
    agent = {k: v for k, v in env.items() if k not in bot}
    return SimpleNamespace(bot_settings=BotSettings(**bot), agent_settings=AgentSettings(**agent), http=http)


def test_local_models_see_images_only_when_listed_and_a_writer_that_cannot_see_turns_them_off() -> None:
    assert not sees_images(services(), "openai", "llava:13b")
    assert sees_images(services(VISION_MODELS="qwen2.5vl*, llava*"), "openai", "llava:13b")
    assert sees_images(services(), "openai", "gpt-4o-mini")
    assert not sees_images(services(), "openai", "gpt-4o-mini", writer="llama3.1")
    assert sees_images(services(), "openai", "gpt-4o-mini", writer="claude-sonnet-4-5")


async def test_attachments_turned_off_are_refused_without_a_download(tmp_path: Path) -> None:
    async with httpx.AsyncClient() as http:
        got = await take(services(http, ATTACHMENT_MAX_FILES=0), [NOWHERE], tmp_path, vision=True)
    assert got.refused == ["notes.md: attachments are turned off on this bot"]
    assert "notes.md: attachments are turned off on this bot (not saved)" in with_note("hi", got)
    assert list(tmp_path.iterdir()) == []


async def test_a_workspace_at_its_entry_limit_refuses_new_files(tmp_path: Path) -> None:
    for i in range(10):
        (tmp_path / f"f{i}.txt").write_text("x")
    async with httpx.AsyncClient() as http:
        got = await take(services(http, FILES_QUOTA_FILES=10), [NOWHERE], tmp_path, vision=True)
    assert got.refused == [
        "notes.md: the workspace holds its limit of 10 files and folders; delete some first"
    ]
    assert not (tmp_path / "notes.md").exists()


def test_stored_history_drops_image_bytes_but_keeps_the_text() -> None:
    shown = Message("user", "look", images=[ImagePart("image/png", "QUJD", "a.png")])
    answer = Message("assistant", "a red square")
    kept = without_images([shown, answer])
    assert kept[0].images == [] and kept[0].content.startswith("look") and "that turn only" in kept[0].content
    assert kept[1] is answer and shown.images  # the run's own messages are not changed
    assert "QUJD" not in str([m.to_dict() for m in kept])
