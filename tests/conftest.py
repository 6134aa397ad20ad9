from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.fakes.llm_server import FakeLLM


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client
