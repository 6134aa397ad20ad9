"""Secrets never reach logs or users (issue 14.10): one table of the ways they leaked, and a few more.

Each case logs (or raises, or builds a user-facing error) through the real configuration and checks
that the secret is nowhere in what came out, and that a ``***`` marks where it was.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import structlog

from agent.config import AgentSettings
from agent.embeddings.base import EmbeddingError
from agent.logs import configure_logging, redact, register_secret
from agent.models.base import ModelError
from agent.models.transport_errors import transport_error
from bot.doctor import _check, _provider
from tests.fakes.llm_server import FakeLLM

SECRET = "sk-live-7f3a9c2e5b8d1f4a6c0e9b2d"
PASSWORD = "Pa55w0rd-basic-auth"  # never registered: only its place in a URL makes it secret
SHORT_PASSWORD = "hunter2"  # too short to register, still userinfo
URL = f"http://agent:{PASSWORD}@llm.internal:8080/v1"
SHORT_URL = f"https://bob:{SHORT_PASSWORD}@proxy.example/v1"


class Holder:
    """An object whose repr carries the secret, as settings objects and clients often do."""

    def __repr__(self) -> str:
        return f"Holder(api_key={SECRET!r})"


def _raise(message: str) -> None:
    raise RuntimeError(message)


@pytest.fixture
def capture() -> Iterator[Callable[[str], io.StringIO]]:
    """Configure logging as the bot does, into a buffer; restore everything afterwards."""
    register_secret(SECRET)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    streams: list[io.StringIO] = []

    def start(fmt: str) -> io.StringIO:
        stream = io.StringIO()
        configure_logging("DEBUG", fmt, stream)
        streams.append(stream)
        return stream

    yield start
    structlog.reset_defaults()
    root.handlers[:], level = saved
    root.setLevel(level)


def _native(call: Callable[[Any], None]) -> Callable[[], None]:
    return lambda: call(structlog.get_logger("test"))


def _stdlib(call: Callable[[logging.Logger], None]) -> Callable[[], None]:
    return lambda: call(logging.getLogger("thirdparty"))


def _log_exception(log: Any) -> None:
    try:
        _raise(f"upstream said: bad key {SECRET}")
    except RuntimeError:
        log.exception("call_failed")


def _log_chained(log: Any) -> None:
    try:
        try:
            _raise(f"connect to {URL} refused")
        except RuntimeError as inner:
            raise ValueError("model unavailable") from inner
    except ValueError:
        log.exception("chained")


def _log_locals(log: Any) -> None:
    api_key = SECRET  # noqa: F841  (a local the rich traceback shows)
    config = {"base_url": URL, "headers": {"Authorization": f"Bearer {SECRET}"}}  # noqa: F841
    long_text = "x" * 60 + SECRET + "y" * 60  # noqa: F841  (cut at 80 characters by rich: mid-secret)
    try:
        _raise("boom")
    except RuntimeError:
        log.exception("with_locals")


def _stdlib_exception(log: logging.Logger) -> None:
    try:
        _raise(f"token {SECRET} rejected")
    except RuntimeError:
        log.error("request failed", exc_info=True)


CASES: list[tuple[str, str, Callable[[], None], str]] = [
    # (case, format, what logs, the secret that must not appear)
    ("event text", "json", _native(lambda log: log.info(f"using key {SECRET}")), SECRET),
    ("keyword value", "json", _native(lambda log: log.info("ev", key=SECRET)), SECRET),
    ("nested dict value", "json", _native(lambda log: log.info("ev", cfg={"a": {"b": SECRET}})), SECRET),
    ("list value", "json", _native(lambda log: log.info("ev", keys=["x", SECRET])), SECRET),
    ("tuple in dict in list", "json", _native(lambda log: log.info("ev", v=[{"t": (1, SECRET)}])), SECRET),
    ("set value", "json", _native(lambda log: log.info("ev", s={SECRET})), SECRET),
    ("dict key", "json", _native(lambda log: log.info("ev", m={SECRET: 1})), SECRET),
    (
        "exception as a value",
        "json",
        _native(lambda log: log.warning("ev", error=ValueError(SECRET))),
        SECRET,
    ),
    ("object repr", "json", _native(lambda log: log.info("ev", client=Holder())), SECRET),
    ("bytes value", "json", _native(lambda log: log.info("ev", body=SECRET.encode())), SECRET),
    ("exc_info traceback message", "json", _native(_log_exception), SECRET),
    ("chained exception cause", "json", _native(_log_chained), PASSWORD),
    ("URL userinfo in a value", "json", _native(lambda log: log.warning("ev", url=URL)), PASSWORD),
    ("short URL password", "json", _native(lambda log: log.warning(f"retrying {SHORT_URL}")), SHORT_PASSWORD),
    ("stdlib %s args", "json", _stdlib(lambda log: log.warning("auth with %s failed", SECRET)), SECRET),
    ("stdlib exc_info", "json", _stdlib(_stdlib_exception), SECRET),
    ("stdlib URL userinfo", "console", _stdlib(lambda log: log.warning("GET %s -> 500", URL)), PASSWORD),
    ("console value", "console", _native(lambda log: log.info("ev", key=SECRET, url=URL)), SECRET),
    ("rich traceback locals", "console", _native(_log_locals), SECRET),
    ("rich traceback locals (URL)", "console", _native(_log_locals), PASSWORD),
]


@pytest.mark.parametrize(("case", "fmt", "emit", "secret"), CASES, ids=[c[0] for c in CASES])
def test_security_secret_never_reaches_a_log_line(
    capture: Callable[[str], io.StringIO], case: str, fmt: str, emit: Callable[[], None], secret: str
) -> None:
    stream = capture(fmt)
    emit()
    out = stream.getvalue()
    assert out.strip(), f"{case}: nothing was logged"
    assert secret not in out, f"{case}: the secret leaked:\n{out}"
    if secret == SECRET:
        assert secret[:12] not in out and secret[-12:] not in out, f"{case}: part of the secret leaked"
    assert "***" in out, f"{case}: no redaction mark:\n{out}"


def test_security_rich_traceback_still_shows_what_is_not_secret(
    capture: Callable[[str], io.StringIO],
) -> None:
    stream = capture("console")
    _native(_log_locals)()
    out = stream.getvalue()
    assert "RuntimeError" in out and "boom" in out and "api_key" in out
    assert "llm.internal:8080" in out  # the host stays: only the userinfo is secret


def test_security_url_userinfo_is_removed_but_urls_stay_readable() -> None:
    assert redact(URL) == "http://***@llm.internal:8080/v1"
    assert redact(f"see {SHORT_URL} and https://medium.com/@otter/post") == (
        "see https://***@proxy.example/v1 and https://medium.com/@otter/post"
    )
    assert redact("mail me: otter@example.org") == "mail me: otter@example.org"


def test_security_model_errors_shown_to_users_carry_no_userinfo() -> None:
    # What a thread shows on a retry ("retrying: ...") and on failure comes from ModelError.message.
    err = transport_error(httpx.ConnectError("refused"), name="gpt-x", base_url=URL, provider="openai")
    assert PASSWORD not in err.message and PASSWORD not in str(err)
    assert "http://***@llm.internal:8080/v1" in err.message
    register_secret(SECRET)
    assert SECRET not in ModelError(f"401 from provider: key {SECRET} invalid").message
    # Memory's embedding endpoint errors reach /memory replies and the doctor the same way.
    assert (
        str(EmbeddingError(f"cannot reach {URL}/embeddings"))
        == "cannot reach http://***@llm.internal:8080/v1/embeddings"
    )


async def test_security_doctor_shows_no_base_url_password(llm: FakeLLM) -> None:
    base = llm.base_url.replace("http://", f"http://agent:{PASSWORD}@")
    llm.api_key = "sk-the-right-key-0001"  # the check fails, so its detail names the endpoint
    settings = AgentSettings.model_validate(
        {"OPENAI_BASE_URL": base, "OPENAI_API_KEY": "sk-a-wrong-key-0002"}
    )
    async with httpx.AsyncClient() as client:
        specs = {settings.agent_model: ["AGENT_MODEL"]}
        check = await _check("provider openai", lambda: _provider("openai", specs, settings, client))
    assert PASSWORD not in check.detail
    assert "***@127.0.0.1" in check.detail


def test_a_secret_setting_is_masked_from_the_moment_it_is_read() -> None:
    """Secrets were registered where each is used, so one a command never uses stayed printable: under
    `agentbot ask` (no Discord) a run_python in PYTHON_SANDBOX=rlimits that printed the .env's
    DISCORD_TOKEN, or a search key with search off, reached the model and the terminal unmasked."""
    from agent.logs import redact
    from bot.config import BotSettings

    AgentSettings(BRAVE_API_KEY="brv-unused-4d1f9a0c77")  # type: ignore[call-arg]
    BotSettings(DISCORD_TOKEN="MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs")  # type: ignore[call-arg]
    shown = redact(
        "env: BRAVE=brv-unused-4d1f9a0c77 TOKEN=MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs"
    )
    assert "brv-unused" not in shown and "ZnCjm1XVW7" not in shown, shown
    assert shown.startswith("env: BRAVE=*** TOKEN="), shown
