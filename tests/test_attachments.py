"""Attachments as a member sends them: served over real HTTP on 127.0.0.1, saved into a workspace,
PDFs read in a limited child process, images handed over only to models that can see."""

from __future__ import annotations

import base64
import resource
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from agent.attachments import AttachmentLimits, IncomingFile, receive, safe_filename
from tests.fakes.sample_files import PNG_1X1, make_pdf


class Files:
    """A CDN on 127.0.0.1 serving byte strings by name."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.url = ""

    def add(self, name: str, data: bytes, *, declared: int | None = None) -> IncomingFile:
        self.blobs[name] = data
        return IncomingFile(name, f"{self.url}/{name}", len(data) if declared is None else declared)


@pytest.fixture
async def cdn() -> AsyncIterator[Files]:
    files = Files()

    async def serve(request: web.Request) -> web.Response:
        data = files.blobs.get(request.match_info["name"])
        return web.Response(body=data) if data is not None else web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    files.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    yield files
    await runner.cleanup()


async def test_attachments_csv_pdf_and_image_reach_the_agent(cdn: Files, tmp_path: Path) -> None:
    files = [
        cdn.add("sales.csv", b"month,units\njan,12\nfeb,30\n"),
        cdn.add("report.pdf", make_pdf(["Quarterly revenue grew 14 percent", "Costs were flat"])),
        cdn.add("chart.png", PNG_1X1),
    ]
    async with httpx.AsyncClient() as client:
        got = await receive(files, tmp_path, client, vision=True)
    assert got.refused == []
    assert (tmp_path / "sales.csv").read_bytes() == b"month,units\njan,12\nfeb,30\n"
    text = (tmp_path / "report.pdf.txt").read_text()
    assert (
        "Quarterly revenue grew 14 percent" in text and "--- page 2 ---" in text and "Costs were flat" in text
    )
    assert [i.media_type for i in got.images] == ["image/png"]
    assert base64.b64decode(got.images[0].data) == PNG_1X1
    note = got.note()
    assert "sales.csv (" in note and "read it with read_file" in note
    assert "report.pdf (" in note and "2 pages" in note and "report.pdf.txt" in note
    assert "chart.png (" in note and "shown to you" in note


async def test_attachments_image_for_a_model_that_cannot_see(cdn: Files, tmp_path: Path) -> None:
    async with httpx.AsyncClient() as client:
        got = await receive([cdn.add("photo.png", PNG_1X1)], tmp_path, client, vision=False)
    assert got.images == [] and "cannot see images" in got.note() and (tmp_path / "photo.png").exists()


async def test_attachments_too_big_unsupported_or_too_many_are_refused(cdn: Files, tmp_path: Path) -> None:
    limits = AttachmentLimits(max_files=3, max_file_bytes=1000)
    files = [
        cdn.add("big.txt", b"x" * 5000),  # declared size over the limit: never downloaded
        cdn.add("liar.txt", b"y" * 5000, declared=10),  # declared small, is not: cut off while streaming
        cdn.add("doc.docx", b"PK\x03\x04" + b"\0" * 100),
        cdn.add("fourth.txt", b"hi"),
    ]
    async with httpx.AsyncClient() as client:
        got = await receive(files, tmp_path, client, vision=True, limits=limits)
    reasons = dict(r.split(": ", 1) for r in got.refused)
    assert "over the 1000" not in reasons["big.txt"] and "5 KB" in reasons["big.txt"]
    assert "larger than the 1000" not in reasons["liar.txt"] and "larger than the" in reasons["liar.txt"]
    assert "unsupported type" in reasons["doc.docx"] and "PDF" in reasons["doc.docx"]
    assert "only 3 files" in reasons["fourth.txt"]
    assert got.saved == [] and list(tmp_path.iterdir()) == []
    assert got.note().count("(not saved)") == 4  # the agent is told too, so it can say so


async def test_attachments_workspace_quota_limits_what_is_saved(cdn: Files, tmp_path: Path) -> None:
    async with httpx.AsyncClient() as client:
        got = await receive(
            [cdn.add("notes.md", b"# n\n" * 500)], tmp_path, client, vision=True, quota_left=100
        )
    assert got.saved == [] and "workspace quota" in got.refused[0]


async def test_attachments_pdf_bomb_stays_in_its_child(cdn: Files, tmp_path: Path) -> None:
    bomb = make_pdf(["boom"], padding=160 * 1024 * 1024)  # 160 MB of content in a few hundred KB
    assert len(bomb) < 2 * 1024 * 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    limits = AttachmentLimits(pdf_memory_mb=64, pdf_timeout=10)
    async with httpx.AsyncClient() as client:
        got = await receive([cdn.add("bomb.pdf", bomb)], tmp_path, client, vision=False, limits=limits)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert "bomb.pdf" in got.saved and "bomb.pdf.txt" not in got.saved
    assert "saved, but" in got.note()
    assert grown_mb < 50


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "_.._etc_passwd"),
        ("\u202egnp.exe", "gnp.exe"),
        ("line\nbreak\r.txt", "line break.txt"),
        ("...", "attachment"),
        ("a" * 300 + ".csv", "a" * 96 + ".csv"),
    ],
)
def test_attachments_filenames_are_made_safe(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


def test_attachments_same_name_twice_is_kept_apart() -> None:
    assert safe_filename("data.csv", {"data.csv", "data (2).csv"}) == "data (3).csv"


@pytest.mark.parametrize(
    ("provider", "model", "extra", "expected"),
    [
        ("openai", "gpt-4.1-nano", (), True),
        ("openai", "gpt-5-mini", (), True),
        ("openai", "o3-mini", (), False),
        ("openai", "openai/gpt-4o", (), True),
        ("openai", "llama3.1", (), False),
        ("openai", "llava:13b", ("llava*",), True),
        ("anthropic", "claude-sonnet-4-5", (), True),
        ("anthropic", "claude-2.1", (), False),
        ("gemini", "gemini-2.5-flash", (), True),
    ],
)
def test_attachments_vision_rules(provider: str, model: str, extra: tuple[str, ...], expected: bool) -> None:
    from agent.models.vision import accepts_images

    assert accepts_images(provider, model, extra) is expected


def test_attachments_images_reach_each_wire_format() -> None:
    from agent.messages import ImagePart, Message
    from agent.models import anthropic, gemini, openai_wire

    msg = Message("user", "What is in this chart?", images=[ImagePart("image/png", "QUJD", "c.png")])
    assert openai_wire.to_wire_messages([msg])[0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,QUJD"},
    }
    _, wire = anthropic.to_wire([msg])
    assert {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "QUJD"}} in wire[
        0
    ]["content"]
    _, contents = gemini.to_wire([msg])
    assert {"inlineData": {"mimeType": "image/png", "data": "QUJD"}} in contents[0]["parts"]
    assert Message.from_dict(msg.to_dict()) == msg  # history keeps the image across restarts
