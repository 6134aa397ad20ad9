from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import structlog

import agent.config
import agent.models.prices
from agent.env_file import MEANT
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM
from tests.fakes.postgres import TEMPLATE_ENV, PostgresServer, mark_owner, scratch_root, sweep_stale
from tests.fakes.web_server import FakeWeb
from tests.file_order import (
    order_files_first,
    pytest_collection_modifyitems,  # noqa: F401 (hook: slowest files first)
)
from tests.settings_names import setting_names
from tests.warm_agentbot import close_warm_server

# Also read, though no setting: other tools' names for ours (refused while ours is unset) and the
# proxies model calls go through.
SETTINGS = setting_names() | set(MEANT) | {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"}


def pytest_configure(config: pytest.Config) -> None:
    order_files_first(config)
    # A shell without job control starts a background job (`make test &`, a CI script's `cmd &`) with
    # SIGINT ignored, and every process the tests start inherits that: the tests of Ctrl-C then saw an
    # agentbot that could not be interrupted (3 of test_blackbox_ask_signals failed so). A terminal's
    # Ctrl-C is what they test, so the tests' processes start with its default disposition.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    config.add_cleanup(close_warm_server)
    # numpy's OpenBLAS starts a thread per core and spins them for each product; ten workers on two cores
    # only fight over them (test_classifier_embedding, test_memory_store and test_memory_embeddings in one
    # process: 15.2 / 16.4 s of CPU with them, 14.5 / 14.3 s with one). Set before any test imports numpy.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # The run's controller (or a run without xdist) names the directory its workers share one initdb in
    # (tests/fakes/postgres.py); workers inherit it. Removed when the run ends.
    if not hasattr(config, "workerinput") and TEMPLATE_ENV not in os.environ:
        sweep_stale(scratch_root())
        template = tempfile.mkdtemp(prefix="agentbot-pg-template-", dir=scratch_root())
        mark_owner(Path(template))
        os.environ[TEMPLATE_ENV] = template

        def remove() -> None:
            shutil.rmtree(template, ignore_errors=True)
            os.environ.pop(TEMPLATE_ENV, None)

        config.add_cleanup(remove)


@pytest.fixture(autouse=True)
def _no_operator_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests never read the operator's ``.env`` or environment: every setting the code knows is
    removed from the environment (subprocesses inherit that), ``.env`` is not read, and the price file
    is the shipped one. tests/test_settings_isolation.py proves a hostile .env and environment change
    no outcome."""
    monkeypatch.setattr(agent.config, "ENV_FILE", None)
    monkeypatch.setattr(agent.models.prices, "_default", agent.models.prices.PriceTable())
    for key in list(os.environ):
        if key.upper() in SETTINGS:
            monkeypatch.delenv(key)
    # A CLI command invoked in-process configures logging for the whole worker (`doctor` at CRITICAL):
    # later tests' log captures then received nothing, so their "never logs the key" checks could not
    # fail. Each test gets back the logging it started with.
    config, root = structlog.get_config(), logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
async def web() -> AsyncIterator[FakeWeb]:
    """Scripted web pages and search backends on 127.0.0.1."""
    async with FakeWeb() as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL per test worker; each test gets a database of its own."""
    server = PostgresServer().start()
    yield server
    server.stop()


StoreTarget = Callable[[], Awaitable[str]]


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> StoreTarget:
    """The store contract: a test taking this runs once per backend. Call it for a fresh, empty
    database's target (a SQLite path, or a PostgreSQL URL); pass that to ``open_database``."""
    if request.param == "sqlite":

        async def sqlite() -> str:
            return str(tmp_path / f"{uuid.uuid4().hex[:8]}.sqlite3")

        return sqlite
    server: PostgresServer = request.getfixturevalue("postgres")

    return server.fresh_database


FAST_WRITE_WINDOW = 1.0
"""Seconds of a thread's write window (Discord's 5 s) for the in-process bots of tests that take
``fast_write_window``: 5 writes per second instead of per 5 s."""


@pytest.fixture
def fast_write_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process bots (``running_bot``) of this test keep each thread's 5 writes in
    ``FAST_WRITE_WINDOW`` instead of 5 s: the same rule (counts, holds, merges and the window a restart
    inherits all follow it), a fifth of the wait. End-to-end tests spent most of their time waiting on
    that window, not on the CPU (test_blackbox_bot_qa3: 43.5 s of wall time for 2.9 s of CPU).

    Only tests whose bot writes the very same thing to Discord either way take it: every create, edit and
    delete, in order, with its route, status and text (digits aside: ids, ports, durations), recorded in
    one run with the real window and two with this one. A test where the window changes what the bot
    does (steps joined into one message or not, an edit where a new message went) keeps the real one:
    a moderator deleting a step message meets its bug only when the next step is an edit of it. Nor do
    tests of the window itself take it (``max_writes_in_window``, the fake's enforced limit), nor
    ``agentbot run`` processes. Like ``BOT_TEST_KWARGS``, which shortens discord.py's 2 s wait for guilds."""
    import bot.runner
    from bot.write_window import WriteBudget

    monkeypatch.setattr(bot.runner, "WriteBudget", functools.partial(WriteBudget, per=FAST_WRITE_WINDOW))


@pytest.fixture
def guild() -> FakeGuild:
    """An e2e test's server; a test file whose tests need other members or roles overrides it."""
    return FakeGuild.create("Lab", channels=("general",), members=("alice",))


@pytest.fixture
def guilds(guild: FakeGuild) -> list[FakeGuild]:
    """The servers the fake Discord holds; files that need two override this."""
    return [guild]


@pytest.fixture
async def fake(guilds: list[FakeGuild]) -> AsyncIterator[FakeDiscord]:
    """The fake Discord on 127.0.0.1 that the real, unmodified discord.py client connects to."""
    async with FakeDiscord(guilds) as server:
        yield server
