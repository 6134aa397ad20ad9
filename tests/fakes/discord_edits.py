"""A user edits a message: the fake Discord stores the edit and dispatches MESSAGE_UPDATE (with the whole
message, as Discord does) to connected bots. Discord also sends MESSAGE_UPDATE when it unfurls a link
into an embed, with the text unchanged: ``edit_message(..., embeds=[...])`` without ``content``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tests.fakes.discord_records import MessageRecord
from tests.fakes.discord_server import FakeDiscord


def edit_message(
    fake: FakeDiscord,
    message: MessageRecord,
    content: str | None = None,
    *,
    embeds: Sequence[dict[str, Any]] | None = None,
) -> MessageRecord:
    body: dict[str, Any] = {}
    if content is not None:
        body["content"] = content
    if embeds is not None:
        body["embeds"] = list(embeds)
    return fake.state.edit_message(message, body, via="injected")
