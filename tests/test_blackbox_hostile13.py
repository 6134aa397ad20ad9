"""Hostile web pages and what reaches the model and the thread (session 13): pages served on 127.0.0.1
(FETCH_ALLOW_LOOPBACK lets the first hop reach them; every other rule holds), host names given to the
fetch guard's resolver, and the real bot against the fake Discord where the thread is what is checked."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpcore
import httpx
import pytest
from aiohttp import web

from agent.attachments import IncomingFile, receive
from agent.messages import ToolCall
from agent.tools.fetch import FetchSettings, PageFetcher, fetch_tools
from agent.tools.registry import ToolContext, ToolRefused, ToolRegistry, TransientToolError
from agent.tools.research import ResearchToolSettings, research_tools
from bot.footer import shown_source
from bot.memory_text import excerpt
from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text, tool_call
from tests.fakes.sample_files import PNG_1X1, make_pdf
from tests.fakes.served import served
from tests.fakes.web_server import ARTICLE

WORDS = "<p>The Eurasian otter returned to the Baltic coast; surveys counted four hundred pairs.</p>"


def _html(title: str, body: str) -> str:
    return f"<html><head><title>{title}</title></head><body><article>{body}</article></body></html>"


@asynccontextmanager
async def fetching(
    app: web.Application, names: tuple[str, ...] = (), **settings: object
) -> AsyncIterator[tuple[PageFetcher, Callable[[str], str]]]:
    """A fetcher (loopback allowed, each of ``names`` resolving to 127.0.0.1) and ``url(path, host)``."""

    async def resolve(host: str, _port: int) -> list[str]:
        return ["127.0.0.1"] if host in names else []

    fetcher = PageFetcher(
        FetchSettings(**{"allow_loopback": True, "timeout": 10, "extract_workers": 1, **settings}),  # type: ignore[arg-type]
        resolver=resolve,
    )
    try:
        async with served(app) as base:
            port = base.rsplit(":", 1)[1]

            def url(path: str, host: str = "127.0.0.1") -> str:
                return f"http://{host}:{port}{path}"

            yield fetcher, url
    finally:
        await fetcher.aclose()


async def test_a_cookie_one_page_sets_never_rides_on_another_fetch() -> None:
    # The fetch client is one per process, and it kept every cookie a page set: a page on
    # evil.blog.test set 300 cookies for the whole blog.test domain, and from then on every fetch of any
    # *.blog.test blog, by any member of any server, carried a 15 KB Cookie header and got HTTP 400 Bad
    # Request. Two servers' fetches of one site also shared that site's session. Cookies now live only
    # as long as one fetch (its redirects).
    cookies_seen: list[str] = []

    async def bomb(_r: web.Request) -> web.Response:
        resp = web.Response(text=_html("Bomb", WORDS), content_type="text/html")
        for i in range(300):
            resp.set_cookie(f"c{i}", "v" * 40, domain="blog.test")
        return resp

    async def article(request: web.Request) -> web.Response:
        cookies_seen.append(request.headers.get("Cookie", ""))
        return web.Response(text=_html("Otters", WORDS), content_type="text/html")

    async def login(_r: web.Request) -> web.Response:
        resp = web.Response(status=302, headers={"Location": "/check"})
        resp.set_cookie("session", "s1")
        return resp

    async def check(request: web.Request) -> web.Response:
        # A cookie check between redirects of one fetch (consent walls, sign-in hops) still passes.
        if request.cookies.get("session") != "s1":
            return web.Response(status=302, headers={"Location": "/login"})
        return web.Response(text=_html("Welcome", WORDS), content_type="text/html")

    app = web.Application()
    for path, handler in (("/bomb", bomb), ("/article", article), ("/login", login), ("/check", check)):
        app.router.add_get(path, handler)
    async with fetching(app, names=("evil.blog.test", "good.blog.test")) as (fetcher, url):
        await fetcher.fetch(url("/bomb", "evil.blog.test"), key="server:1")
        page = await fetcher.fetch(url("/article", "good.blog.test"), key="server:2")
        assert "four hundred pairs" in page.text
        assert cookies_seen == [""], cookies_seen[0][:200]
        page = await fetcher.fetch(url("/login", "good.blog.test"), key="server:2")
        assert page.title == "Welcome"
        page = await fetcher.fetch(url("/article", "good.blog.test"), key="server:1")
        assert cookies_seen[-1] == "", cookies_seen  # the session of one fetch is not the next one's


SPAM = "[docs](https://docs.example) **FREE NITRO** [Verify your account](https://evil.example)"
LIVE_LINK = re.compile(r"(?<!\\)\[[^\]\n]*\]\(\s*<?https?://", re.I)
"""A masked link Discord would render: ``[text](https://…)`` whose ``[`` no backslash escapes."""


async def test_a_thread_shows_page_and_member_words_as_written_with_no_link_of_theirs_and_whole_urls(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    # untrusted() relied on discord.py's escape_markdown, whose link pattern is greedy: it escaped the
    # first "[" of a line and nothing up to the last ")", so "[docs](…) **FREE NITRO** [Verify your
    # account](https://evil.example)" showed bold words and a live masked link in the bot's own words:
    # in the header quoting the task, in a step's observation and in the retry note quoting a reason phrase.
    # And a failed fetch of a URL with parentheses (Wikipedia's "_(disambiguation)") showed its link cut
    # before the ")", a page that is not the one asked for, with a stray ")" left in the line.
    app = web.Application()
    app.router.add_get("/down", lambda _r: web.Response(status=503, reason=SPAM))
    app.router.add_get(
        "/spam", lambda _r: web.Response(text=_html(SPAM, f"<p>{SPAM}</p>"), content_type="text/html")
    )
    async with served(app) as base:
        llm.script(
            tool_call("fetch_url", {"url": f"{base}/down"}),
            tool_call("fetch_url", {"url": f"{base}/spam"}),
            tool_call("fetch_url", {"url": f"{base}/wiki/Otter_(disambiguation)"}),
            text("Nothing to see."),
        )
        env = {"FETCH_ALLOW_LOOPBACK": True}
        async with running_bot(fake, llm, tmp_path, guild, agent_env=env) as bot:
            general = guild.channel("general")
            fake.inject_interaction(
                "research", {"task": f"Is this real? {SPAM}"}, user="alice", channel=general
            )
            thread = await fake.wait_for_thread(parent=general)
            await fake.wait_for_message(thread, lambda m: "Nothing to see" in m.content, within=30)
            await wait_idle(fake, bot)
    shown = "\n".join(m.content for m in fake.messages(thread))
    assert "Verify your account" in shown and "FREE NITRO" in shown, shown  # still shown, as written
    assert not LIVE_LINK.search(shown), LIVE_LINK.search(shown)
    assert "**FREE NITRO**" not in shown, shown
    assert f"HTTP 404 Not Found for · <{base}/wiki/Otter_(disambiguation)>" in shown, shown


FRENCH = "La crème brûlée à la française : œufs, sucre, vanille — déjà prête en vingt minutes."
RUSSIAN = "Выдры вернулись на побережье Балтики: насчитали четыреста пар."


async def test_a_page_in_the_character_set_its_header_names_is_read_in_it() -> None:
    # trafilatura read HTML bytes by guessing their encoding and never saw the Content-Type's charset:
    # a French page sent as windows-1252 read "La crčme brűlée ŕ la française : śufs", a Russian one in
    # KOI8-R came out as half-width katakana, and unlabelled Latin-1 text/plain as "Cr\ufffdme".
    def page(title: str, words: str, codec: str, content_type: str) -> Callable[[web.Request], web.Response]:
        body = _html(title, f"<p>{words}</p>").encode(codec)
        return lambda _r: web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/fr", page("Crème brûlée", FRENCH, "cp1252", "text/html; charset=windows-1252"))
    app.router.add_get("/ru", page("Выдры", RUSSIAN, "koi8-r", "text/html; charset=KOI8-R"))
    # A UTF-8 page a server labels iso-8859-1 (Apache's AddDefaultCharset) stays UTF-8, as it was read.
    app.router.add_get("/mislabelled", page("Crème brûlée", FRENCH, "utf-8", "text/html; charset=iso-8859-1"))
    plain = FRENCH.encode("cp1252")
    app.router.add_get("/plain", lambda _r: web.Response(body=plain, headers={"Content-Type": "text/plain"}))
    # Such a page cut by FETCH_MAX_BYTES inside a character is still UTF-8 (the cut one is dropped).
    long = _html("Crème brûlée", f"<p>{FRENCH}</p>" * 20).encode()
    cut = next(
        i for i in range(len(long) // 2, len(long)) if long[i] & 0xC0 == 0x80 and i % 2
    )  # mid-character
    # And a UTF-16 page cut at an odd byte was refused as "binary data, not UTF-16 text".
    wide = codecs.BOM_UTF16_LE + long.decode().encode("utf-16-le")
    app.router.add_get("/wide", lambda _r: web.Response(body=wide, headers={"Content-Type": "text/html"}))
    app.router.add_get(
        "/long", lambda _r: web.Response(body=long, headers={"Content-Type": "text/html; charset=iso-8859-1"})
    )
    async with fetching(app, max_bytes=cut) as (fetcher, url):
        for path in ("/fr", "/mislabelled"):
            page_ = await fetcher.fetch(url(path))
            assert (page_.title, page_.text) == ("Crème brûlée", FRENCH), path
        page_ = await fetcher.fetch(url("/ru"))
        assert (page_.title, page_.text) == ("Выдры", RUSSIAN)
        assert (await fetcher.fetch(url("/plain"))).text == FRENCH
        for path in ("/long", "/wide"):
            page_ = await fetcher.fetch(url(path))
            assert page_.body_truncated and page_.text.startswith(FRENCH), (path, page_.text[:200])


async def test_a_page_still_dripping_in_at_the_time_limit_is_read_as_far_as_it_came_once() -> None:
    # A server sending its page a few bytes a second held fetch_url for FETCH_TIMEOUT, failed ("took
    # longer than 2 s"), was fetched again and failed again: 4.5 s of a run for a 2 s limit, and nothing
    # read although the article had arrived in the first second. The body is kept as far as it came.
    hits: list[int] = []

    async def drip(request: web.Request) -> web.StreamResponse:
        hits.append(1)
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        await resp.prepare(request)
        await resp.write(f"<html><head><title>Slow</title></head><body><article>{WORDS}".encode())
        with contextlib.suppress(ConnectionError):
            for _ in range(100):
                await asyncio.sleep(0.2)
                await resp.write(b"<!-- -->")
        return resp

    app = web.Application()
    app.router.add_get("/drip", drip)
    async with fetching(app, timeout=2) as (fetcher, url):
        registry = ToolRegistry(fetch_tools(fetcher))
        call = ToolCall("c1", "fetch_url", json.dumps({"url": url("/drip")}))
        outcome = await registry.execute(call, ToolContext())
    assert not outcome.is_error, outcome.output
    assert "four hundred pairs" in outcome.output
    assert "[the page was still arriving after 2 s; only what came by then was read]" in outcome.output
    assert len(hits) == 1  # not fetched again


async def test_a_pdf_or_an_image_served_as_a_page_is_named_not_read_as_text() -> None:
    # A PDF sent as text/html was refused as "binary data without a content type" (it had one), and as
    # text/plain its raw PDF syntax reached the model as the page; a PNG sent as text/plain arrived as
    # 200 characters of binary noise. Each is now named for what it is, the PDF with the usual advice.
    pdf, png = make_pdf(["Quarterly revenue grew 14 percent"]), PNG_1X1
    app = web.Application()
    for path, body, ctype in (
        ("/report", pdf, "text/html"),
        ("/report.txt", pdf, "text/plain"),
        ("/chart", png, "text/plain; charset=utf-8"),
        ("/chart.html", png, "text/html"),
    ):
        app.router.add_get(
            path, lambda _r, b=body, c=ctype: web.Response(body=b, headers={"Content-Type": c})
        )
    async with fetching(app) as (fetcher, url):
        for path in ("/report", "/report.txt"):
            with pytest.raises(ToolRefused, match=r"is a PDF .*Look for an HTML version"):
                await fetcher.fetch(url(path))
        for path in ("/chart", "/chart.html"):
            with pytest.raises(
                ToolRefused, match=r"is a PNG image \(served as text/\w+\): binary data, not a page"
            ):
                await fetcher.fetch(url(path))


async def test_a_search_service_answering_with_a_redirect_says_where_it_points() -> None:
    # SEARXNG_URL=http://… for an instance that moves callers to https:// (or a path it moved) answered
    # every search with "SearxNG answered with something that is not JSON", sending the operator to
    # SearxNG's formats setting. Redirects stay unfollowed (a key would go along); the error says where.
    app = web.Application()
    app.router.add_get(
        "/search",
        lambda r: web.Response(
            status=301, headers={"Location": f"https://searx.example/search?{r.query_string}"}
        ),
    )
    async with served(app) as base:
        settings = ResearchToolSettings.from_env({"SEARXNG_URL": base, "PYTHON_SANDBOX": "off"})
        outcome = await ToolRegistry(research_tools(settings)).execute(
            ToolCall("s1", "web_search", json.dumps({"query": "otters"})), ToolContext()
        )
    assert outcome.is_error
    error = json.loads(outcome.output)["error"]
    assert "a redirect to https://searx.example/search?q=otters" in error, error
    assert "SEARXNG_URL" in error and "not JSON" not in error, error


async def test_an_attachment_whose_address_httpx_cannot_read_is_refused_and_the_turn_goes_on(
    tmp_path: Path,
) -> None:
    # A file named "notes\nv2.txt" (the fake Discord, like any server that does not clean names, puts
    # the name in its address) made httpx raise InvalidURL, which receive() did not catch: the whole
    # turn failed with an error id ("turn_failed"), the member's other files and question unanswered.
    app = web.Application()
    app.router.add_get("/attachments/1/ok.txt", lambda _r: web.Response(body=b"otters: 412\n"))
    async with served(app) as base, httpx.AsyncClient() as client:
        got = await receive(
            [
                IncomingFile("notes\nv2.txt", f"{base}/attachments/1/notes\nv2.txt", 5),
                IncomingFile("ok.txt", f"{base}/attachments/1/ok.txt", 12),
            ],
            tmp_path,
            client,
            vision=False,
        )
    assert got.saved == ["ok.txt"] and (tmp_path / "ok.txt").read_bytes() == b"otters: 412\n"
    (refused,) = got.refused
    assert refused.startswith("notes v2.txt: its address cannot be downloaded"), refused


def test_a_memory_kept_from_a_page_shows_no_link_of_its_own_in_memory_replies() -> None:
    # /memory search and list quote what was kept, web pages' words included (auto-web memories), through
    # discord.py's escape_markdown: its greedy link pattern left a second masked link and the bold
    # between live, as in threads, in the bot's reply.
    shown = excerpt(f"Kept from a page: {SPAM}")
    assert "Verify your account" in shown and not LIVE_LINK.search(shown), shown
    assert "**FREE NITRO**" not in shown, shown


async def test_a_search_result_on_a_look_alike_domain_is_shown_by_its_ascii_name() -> None:
    # "https://аpple.com/login" (a Cyrillic "а") from a search service reached the model and the thread's
    # sources as written, reading as apple.com in the bot's own list; fetch_url's sources already show a
    # host in its ASCII form (xn--pple-43d.com), as browsers do for such names.
    results = {
        "results": [
            {"url": "https://аpple.com/login", "title": "Sign in", "content": "Apple ID"},
            {"url": "https://ｅxample.org/x", "title": "Wide", "content": "fullwidth letters"},
            {"url": "https://example.org/straße", "title": "Plain host", "content": "kept as written"},
        ]
    }
    app = web.Application()
    app.router.add_get("/search", lambda _r: web.json_response(results))
    async with served(app) as base:
        settings = ResearchToolSettings.from_env({"SEARXNG_URL": base, "PYTHON_SANDBOX": "off"})
        outcome = await ToolRegistry(research_tools(settings)).execute(
            ToolCall("s1", "web_search", json.dumps({"query": "apple id"})), ToolContext()
        )
    assert outcome.sources == [
        "https://xn--pple-43d.com/login",
        "https://example.org/x",
        "https://example.org/straße",
    ], outcome.sources
    assert "аpple.com" not in outcome.output and "https://xn--pple-43d.com/login" in outcome.output
    assert shown_source("https://аpple.com/login") == "<https://xn--pple-43d.com/login>"


async def test_text_or_json_labelled_as_html_or_not_labelled_is_read_not_called_empty() -> None:
    # PHP answers JSON as text/html unless told otherwise, and some servers send text with no type (read
    # as HTML): trafilatura finds no HTML in them and the model was told "(no readable text on this
    # page)" of a page holding the very numbers asked for.
    data, words = (
        b'{"otters": 412, "years": [2021, 2022]}',
        b"Otters returned to the Baltic coast.\nFour hundred pairs.\n",
    )
    app = web.Application()
    app.router.add_get(
        "/api.php", lambda _r: web.Response(body=data, headers={"Content-Type": "text/html; charset=UTF-8"})
    )
    app.router.add_get("/notes", lambda _r: web.Response(body=words, headers={"Content-Type": "text/html"}))
    app.router.add_get("/untyped", lambda _r: web.Response(body=words, headers={"Content-Type": ""}))
    async with fetching(app) as (fetcher, url):
        page_ = await fetcher.fetch(url("/api.php"))
        assert '"otters": 412' in page_.text and "2022" in page_.text, page_.text
        for path in ("/notes", "/untyped"):
            page_ = await fetcher.fetch(url(path))
            assert page_.text == words.decode().strip(), (path, page_.text)


async def test_a_text_file_a_bucket_serves_as_octet_stream_is_read() -> None:
    # S3 and other file stores label a file uploaded without a type application/octet-stream (or
    # binary/octet-stream): a plain CSV there was refused as "application/octet-stream, which fetch_url
    # cannot read". Such a body is sniffed like an untyped one; real binary is still refused.
    csv = b"year,pairs\n2021,380\n2022,400\n2023,412\n"
    app = web.Application()
    for path, body, ctype in (
        ("/otters.csv", csv, "binary/octet-stream"),
        ("/page", _html("Otters", WORDS).encode(), "application/octet-stream"),
        ("/tool.bin", b"\x7fELF\x02\x01\x01\x00" + bytes(200), "application/octet-stream"),
    ):
        app.router.add_get(
            path, lambda _r, b=body, c=ctype: web.Response(body=b, headers={"Content-Type": c})
        )
    async with fetching(app) as (fetcher, url):
        assert (await fetcher.fetch(url("/otters.csv"))).text == csv.decode().strip()
        assert "four hundred pairs" in (await fetcher.fetch(url("/page"))).text
        with pytest.raises(ToolRefused, match="binary data"):
            await fetcher.fetch(url("/tool.bin"))


async def test_a_page_that_only_redirects_by_meta_refresh_is_followed_as_a_redirect() -> None:
    # Google's result links (google.com/url?q=…), many shorteners and login walls answer 200 with a
    # <meta http-equiv="refresh" content="0;url=…"> page: the model read "Redirecting / click here" and
    # never the address. It is followed like a Location, checked by the guard and the domain rules.
    def refresh(to: str, delay: int = 0) -> Callable[[web.Request], web.Response]:
        meta = f'<meta content="{delay}; URL=&#39;{to}&#39;" http-equiv="Refresh">'
        page = f"<html><head>{meta}</head><body><div>Redirecting</div><a href='{to}'>click here</a></body></html>"
        return lambda _r: web.Response(text=page, content_type="text/html")

    app = web.Application()
    app.router.add_get(
        "/article", lambda _r: web.Response(text=_html("Otters", WORDS), content_type="text/html")
    )
    app.router.add_get("/url", refresh("/article?a=1&amp;b=2"))
    app.router.add_get("/metadata", refresh("http://169.254.169.254/latest/meta-data/"))
    app.router.add_get("/reload", refresh("/reload", delay=300))  # a page reloading itself: no redirect
    app.router.add_get("/js", refresh("javascript:alert(1)"))  # not a web address: the page is read
    async with fetching(app) as (fetcher, url):
        page_ = await fetcher.fetch(url("/url"))
        assert page_.url == url("/article?a=1&b=2") and "four hundred pairs" in page_.text, page_
        with pytest.raises(ToolRefused, match="cloud metadata"):
            await fetcher.fetch(url("/metadata"))
        for path in ("/reload", "/js"):
            assert "Redirecting" in (await fetcher.fetch(url(path))).text, path


async def test_a_url_on_a_port_of_another_protocol_is_refused_before_connecting() -> None:
    # fetch_url connected anywhere public on any port, so a page or member could have the bot send HTTP
    # to a mail server (http://mx.example:25/ with a crafted path), SSH or IRC, or learn which ports of a
    # host are open from its errors. Browsers refuse those ports (WHATWG "bad ports"); so does the guard.
    connects: list[tuple[str, int]] = []

    class Recording(httpcore.AsyncNetworkBackend):
        async def connect_tcp(
            self, host: str, port: int, *_a: object, **_k: object
        ) -> httpcore.AsyncNetworkStream:
            connects.append((host, port))
            raise httpcore.ConnectError("the test reaches no network")

    async def public(_host: str, _port: int) -> list[str]:
        return ["93.184.216.34"]

    fetcher = PageFetcher(FetchSettings(timeout=5, extract_workers=1), resolver=public, backend=Recording())
    try:
        for port in (25, 22, 6667):
            with pytest.raises(ToolRefused, match=f"port {port} is another protocol's"):
                await fetcher.fetch(f"http://mx.example:{port}/HELO%20x")
        with pytest.raises(TransientToolError):  # an ordinary port is still tried
            await fetcher.fetch("http://mx.example:8080/")
    finally:
        await fetcher.aclose()
    assert connects == [("93.184.216.34", 8080)], connects


async def test_a_page_read_again_reads_the_same_as_the_first_time() -> None:
    # trafilatura's duplicate test remembers every paragraph across pages, and the extraction worker
    # lives for the whole process: from the fourth time a page was read (by any member of any server,
    # or by the model paging through it with start=) its paragraphs counted as duplicates, and it came
    # back as the menu-and-footer plain text ("Home | About | Shop Otters of…"), with other offsets.
    app = web.Application()
    app.router.add_get("/article", lambda _r: web.Response(text=ARTICLE, content_type="text/html"))
    async with fetching(app) as (fetcher, url):
        first = await fetcher.fetch(url("/article"), key="server:1")
        for n in range(4):
            again = await fetcher.fetch(url("/article"), key=f"server:{n % 2}")
            assert (again.text, again.plain) == (first.text, False), again.text[:200]
    assert first.text.startswith("Otters of the Baltic") and "Cookie settings" not in first.text


async def test_a_json_page_reaches_the_model_with_every_number_and_key_as_written() -> None:
    # JSON is indented for reading by parsing and writing it again, through floats: a price of
    # 19.999999999999999999 reached the model as 20.0, an amount of 0.123456789012345678 as
    # 0.12345678901234568 and 1e400 as Infinity (not even JSON). Numbers are now kept as written.
    data = (
        b'{"price": 19.999999999999999999, "amount": 0.123456789012345678, "big": 1e400, "n": 5, "ok": 0.5}'
    )
    app = web.Application()
    app.router.add_get(
        "/api", lambda _r: web.Response(body=data, headers={"Content-Type": "application/json"})
    )
    async with fetching(app) as (fetcher, url):
        text = (await fetcher.fetch(url("/api"))).text
    for number in ("19.999999999999999999", "0.123456789012345678", "1e400", '"n": 5', '"ok": 0.5'):
        assert number in text, text
    assert "Infinity" not in text and "20.0" not in text, text
    # Nor is a key given twice (a page's own JSON says both) cut down to its last value.
    app = web.Application()
    twice = b'{"pairs": 380, "pairs": 412}'
    app.router.add_get(
        "/twice", lambda _r: web.Response(body=twice, headers={"Content-Type": "application/json"})
    )
    async with fetching(app) as (fetcher, url):
        assert (await fetcher.fetch(url("/twice"))).text == twice.decode()
