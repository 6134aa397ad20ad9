"""The raw chromadb client of a store: the embedded directory, or a Chroma server with a timeout that
chromadb's own HTTP client does not have.

chromadb (~0.6 s of CPU to import) loads when the first client is made, not with this module: importing
the memory store's modules (type hints, the test suite's ten workers collecting the memory tests) no
longer pays for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from agent.memory.types import MemoryStoreError
from agent.models.transport_errors import tls_problem

__all__ = ["chroma_client", "server_name"]


def server_name(host: str, port: int) -> str:
    return f"Chroma server {host}:{port} (CHROMA_HOST)"


def chroma_client(
    path: Path | None,
    *,
    host: str | None,
    port: int,
    ssl: bool,
    headers: dict[str, str] | None,
    timeout: float,
) -> Any:
    """``PersistentClient`` under ``path``, or ``HttpClient`` of ``host`` (what ``open``, ``backup`` and
    ``restore`` read and write through)."""
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False, allow_reset=False)
    if not host:
        assert path is not None
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=settings)
    # chromadb's HTTP client waits forever (timeout=None), from its first request in the constructor
    # on: a server that takes the connection and says nothing is found here, within CHROMA_TIMEOUT,
    # and every later request gets that timeout too.
    scheme = "https" if ssl else "http"
    try:
        httpx.get(f"{scheme}://{host}:{port}/api/v2/heartbeat", timeout=timeout)
    except httpx.TimeoutException as e:
        raise MemoryStoreError(
            f"{server_name(host, port)} took the connection but did not answer within {timeout:g} s "
            "(CHROMA_TIMEOUT): is it still starting, or is something else on that port?"
        ) from e
    except httpx.HTTPError as e:
        # chromadb says what is wrong (refused, ...) in its own words, except for TLS: CHROMA_SSL=1 to a
        # plain-HTTP server was "Could not connect to a Chroma server. Are you sure it is running?"
        if ssl and (tls := tls_problem(e, "CHROMA_SSL")) is not None:
            if tls.startswith("answered plain HTTP"):
                tls = "answered plain HTTP to https: set CHROMA_SSL=0, or serve it over TLS"
            raise MemoryStoreError(f"{server_name(host, port)} {tls}") from e
    client = chromadb.HttpClient(host=host, port=port, ssl=ssl, headers=headers or None, settings=settings)
    session = getattr(getattr(client, "_server", None), "_session", None)
    if isinstance(session, httpx.Client):
        session.timeout = httpx.Timeout(timeout)
    return client
