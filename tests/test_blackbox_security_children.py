"""What the child processes the bot starts on hostile input can see of the bot's own environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent import attachments
from agent.attachments import AttachmentLimits

_SECRETS = {"DISCORD_TOKEN": "discord-secret-0123456789", "OPENAI_API_KEY": "sk-parent-secret-0001"}


async def test_blackbox_security_pdf_reader_child_sees_no_secret_of_the_bot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real spawn path, with a stand-in for pdf_text.py that answers with the environment it got.
    spy = tmp_path / "spy.py"
    spy.write_text("import json, os\nprint(json.dumps({'text': json.dumps(dict(os.environ)), 'pages': 1}))\n")
    monkeypatch.setattr(attachments, "_PDF_SCRIPT", str(spy))
    for name, value in _SECRETS.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "a.pdf").write_bytes(b"%PDF-1.4\n")
    text, _ = await attachments._pdf_text(tmp_path / "a.pdf", AttachmentLimits())
    seen = json.loads(text)
    assert not set(_SECRETS) & set(seen) and not any(v in text for v in _SECRETS.values())
    assert "PATH" in seen  # still a working process
