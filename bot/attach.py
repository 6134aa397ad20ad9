"""Files attached to ``/research``, a mention or a follow-up: saved into the session's workspace when
the turn starts, and the agent told what arrived (:mod:`agent.attachments` reads them; README
"Attachments" has the limits).

* A follow-up queued across a restart: only its text is stored (Discord's signed attachment URLs
  expire), so the runner fetches its message again at start-up for the files it carries.
* Images go to the model only when the model starting the turn accepts them; a fallback to a
  text-only model mid-turn is not re-checked.
* Images stay in the user message only for the turn they arrived in (and its checkpoints, so a
  resumed turn still sees them), so the stored history does not grow by megabytes per turn.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import discord

from agent.attachments import AttachmentLimits, IncomingFile, Received, receive, safe_filename
from agent.messages import Message
from agent.models.vision import accepts_images
from agent.tools.files import workspace_files, workspace_usage
from agent.tools.safe_names import safe_name

if TYPE_CHECKING:
    from bot.services import Services

MIB = 1024 * 1024
ENTRIES_PER_FILE = 2
"""A PDF adds its extracted text beside it."""
SHOWN_ONCE = (
    "[The attached images were shown to the model in that turn only; the files stay in the workspace.]"
)


DISCORD_FILE_HOSTS = frozenset({"cdn.discordapp.com", "media.discordapp.net"})


def from_discord(url: str) -> bool:
    """Whether ``url`` is on Discord's file servers, or the API's own server (where a local fake Discord
    serves them). Only those are downloaded: the bot's HTTP client reaches any address, loopback and the
    cloud metadata service included, so a file address from anywhere else (a future path that takes one
    from message text or an embed, a forged payload) must not become a request from the bot's host."""
    parts, api = urlsplit(url), urlsplit(discord.http.Route.BASE)
    if parts.scheme == "https" and parts.hostname in DISCORD_FILE_HOSTS:
        return True
    return (parts.scheme, parts.netloc) == (api.scheme, api.netloc)


def incoming(attachments: Sequence[Any]) -> tuple[IncomingFile, ...]:
    return tuple(
        IncomingFile(a.filename, a.url, int(a.size or 0), getattr(a, "content_type", None))
        for a in attachments
    )


def files_only(attachments: Sequence[Any]) -> str:
    """The request of a message that brings files and no words (a mention with a PDF, a bare upload)."""
    return "(attachments: " + ", ".join(safe_name(a.filename) for a in attachments) + ")"


def sees_images(sv: Services, provider: str, model: str, writer: str | None = None) -> bool:
    """Whether the turn's model, and the model that writes its answer after a hand-over, take images
    (the writer is known by name only: its name decides, whichever provider serves it)."""
    extra = [p for p in sv.bot_settings.vision_models.split(",") if p.strip()]
    if writer is not None and not any(
        accepts_images(p, writer, extra) for p in ("openai", "anthropic", "gemini")
    ):
        return False
    return accepts_images(provider, model, extra)


async def take(
    sv: Services, files: Sequence[IncomingFile], workspace: Path, *, vision: bool, readable: bool = True
) -> Received:
    """Save ``files`` into ``workspace`` within the message limits and what is left of the quota."""
    b, a = sv.bot_settings, sv.agent_settings
    per_file = int(b.attachment_max_mb * MIB)
    limits = AttachmentLimits(
        max_files=b.attachment_max_files,
        max_file_bytes=per_file,
        max_message_bytes=int(per_file * 2.5),
        max_image_bytes=min(AttachmentLimits().max_image_bytes, per_file),
    )
    used = await asyncio.to_thread(workspace_usage, workspace, a.files_quota_files + 1)
    bytes_left = max(0, a.files_quota_bytes - used.bytes)
    room = max(0, a.files_quota_files - used.entries) // ENTRIES_PER_FILE
    files = list(files)
    n = room if limits.max_files else 0
    why = (
        f"the workspace holds its limit of {a.files_quota_files} files and folders; delete some first"
        if limits.max_files
        else "attachments are turned off on this bot"
    )
    got = Received()
    elsewhere = [f for f in files[:n] if not from_discord(f.url)]
    if n:
        got = await receive(
            [f for f in files[:n] if f not in elsewhere],
            workspace,
            sv.http,
            vision=vision,
            readable=readable,
            limits=limits,
            quota_left=bytes_left,
        )
    got.refuse([f"{safe_filename(f.filename)}: it is not on Discord's file server" for f in elsewhere])
    got.refuse([f"{safe_filename(f.filename)}: {why}" for f in files[n:]])
    return got


def with_note(prompt: str, got: Received | None) -> str:
    note = got.note() if got is not None else ""
    return f"{prompt}\n\n{note}" if note else prompt


def without_images(messages: Sequence[Message]) -> list[Message]:
    """Messages for the stored history: images dropped (see the module docstring), the text kept."""
    return [
        replace(m, images=[], content=f"{m.content}\n\n{SHOWN_ONCE}") if m.images else m for m in messages
    ]


def file_stamps(workspace: Path | None) -> dict[Path, tuple[int, int]]:
    """(mtime, size) of each workspace file when a run starts, so the files it finds there (the user's
    attachments among them) are not sent back to the thread as the files it wrote."""
    if workspace is None:
        return {}

    out: dict[Path, tuple[int, int]] = {}
    for path in workspace_files(workspace):
        with contextlib.suppress(OSError):
            st = path.stat()
            out[path] = (st.st_mtime_ns, st.st_size)
    return out


MAX_ATTACHMENTS = 10
MAX_ATTACHMENT_BYTES = 8 * 1024 * 1024
"""Files a turn wrote that are sent back to the thread: at most this many, each at most this big."""


def new_paths(
    workspace: Path | None, since: float, before: dict[Path, tuple[int, int]] | None = None
) -> list[str]:
    """Files the agent wrote in its workspace during this turn, to attach (at most 10, 8 MB each), as
    paths within it (kept with a saved answer: a restart that delivers it attaches them too).

    ``before``: the workspace's files as the run found them (mtime, size), unchanged ones are not the
    agent's work (the user's own attachments, or an earlier turn's files within ``since``'s second)."""
    if workspace is None:
        return []
    out: list[str] = []
    for path in workspace_files(workspace):
        try:
            st = path.stat()
            if before and before.get(path) == (st.st_mtime_ns, st.st_size):
                continue
            if st.st_mtime >= since - 1 and st.st_size <= MAX_ATTACHMENT_BYTES:
                out.append(str(path.relative_to(workspace)))
        except OSError:
            continue
        if len(out) >= MAX_ATTACHMENTS:
            break
    return out


def file_contents(workspace: Path | None, files: list[str]) -> list[tuple[str, bytes]]:
    """:func:`new_paths`' files as attachments (name, bytes); one gone or grown past 8 MB is left out."""
    out: list[tuple[str, bytes]] = []
    if workspace is None:
        return out
    for rel in files:
        path = workspace / rel
        try:
            if path.stat().st_size <= MAX_ATTACHMENT_BYTES and path.resolve().is_relative_to(
                workspace.resolve()
            ):
                name = safe_name(rel.replace("/", "_"))  # no bidi/newlines
                out.append((name, path.read_bytes()))
        except OSError:
            continue
    return out


def new_files(
    workspace: Path | None, since: float, before: dict[Path, tuple[int, int]] | None = None
) -> list[tuple[str, bytes]]:
    """:func:`new_paths` read as attachments."""
    return file_contents(workspace, new_paths(workspace, since, before))
