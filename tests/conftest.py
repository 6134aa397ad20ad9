from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.fakes.llm_server import FakeLLM
from tests.fakes.web_server import FakeWeb


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
