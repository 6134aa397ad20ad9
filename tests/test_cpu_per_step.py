"""Bot CPU per agent step (``bench/bot_load.py``, issue 18): what the quota ledger no longer does for
every charge, and that the model client's answers, errors and TLS read as they should (kept from a
measured and declined change of its socket backend, README: Scaling).

No timed assertions: each cut is pinned by the work that is gone; the figures are in the commits.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
from pathlib import Path
from typing import Any

import pytest

from agent.messages import Message
from agent.models.base import ModelError, ModelSettings, final_response
from agent.models.http import make_client, shared_tls
from agent.models.openai import OpenAIChatModel
from tests.test_model_transport import _raw_server, _read_request


def _model(base_url: str, client: Any) -> OpenAIChatModel:
    return OpenAIChatModel(
        "gpt-4o-mini", base_url=base_url, api_key="sk-test-cpu-0001", client=client, max_attempts=1
    )


async def _ask(model: OpenAIChatModel) -> Message:
    response = await final_response(model, [Message("user", "add 2 and 3")], ModelSettings(stream=True))
    assert response is not None
    return response.message


def _answer(content: str) -> bytes:
    body = json.dumps(
        {"choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}
    ).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


async def test_a_kept_alive_connection_the_server_closed_is_not_used_again() -> None:
    """A server that closes an idle kept-alive connection (its keep-alive timeout): the next call opens
    a new one instead of writing into the closed one and failing."""

    closed = asyncio.Event()

    async def once_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_answer("first"))
        await writer.drain()
        writer.close()  # without a Connection: close header
        await writer.wait_closed()
        closed.set()

    async for base_url, connections in _raw_server(once_then_close):
        async with make_client() as client:
            model = _model(base_url, client)
            s = ModelSettings(stream=False)
            first = await final_response(model, [Message("user", "a")], s)
            await closed.wait()
            second = await final_response(model, [Message("user", "b")], s)
        assert first is not None and second is not None
        assert (first.message.content, second.message.content) == ("first", "first")
        assert len(connections) == 2


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_a_model_server_over_https_is_reached_and_an_untrusted_one_said_plainly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TLS goes through asyncio's own handshake now: a trusted certificate answers, an untrusted one is
    the same one-line advice as before (SSL_CERT_FILE), and plain HTTP spoken to https:// too."""
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_answer("over TLS"))
        await writer.drain()

    server = await asyncio.start_server(lambda r, w: _serve_one(answer, r, w), "127.0.0.1", 0, ssl=server_ctx)

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # a TLS hello is no HTTP request: a plain server answers 400 at once
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()

    plain = await asyncio.start_server(lambda r, w: _serve_one(refuse, r, w), "127.0.0.1", 0)
    port, plain_port = server.sockets[0].getsockname()[1], plain.sockets[0].getsockname()[1]
    s = ModelSettings(stream=False)
    try:
        async with make_client() as client:  # the system's CAs: the certificate is not trusted
            with pytest.raises(ModelError) as caught:
                await final_response(
                    _model(f"https://127.0.0.1:{port}/v1", client), [Message("user", "a")], s
                )
            assert "does not trust" in str(caught.value) and "SSL_CERT_FILE" in str(caught.value)
            with pytest.raises(ModelError) as plain_caught:
                await final_response(
                    _model(f"https://127.0.0.1:{plain_port}/v1", client), [Message("user", "a")], s
                )
            assert "write http://" in str(plain_caught.value), str(plain_caught.value)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        async with make_client() as client:
            got = await final_response(
                _model(f"https://127.0.0.1:{port}/v1", client), [Message("user", "a")], s
            )
        assert got is not None and got.message.content == "over TLS"
    finally:
        for srv in (server, plain):
            srv.close()
            await srv.wait_closed()


async def _serve_one(handler: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await handler(reader, writer)
    except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def test_a_batch_of_quota_charges_is_one_hop_to_sqlites_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reserves and settles queued together were BEGIN, one executemany per kind, a read of the reserves
    held and COMMIT, each a hand-off to SQLite's thread and back; now one per batch, the same charges."""
    from agent.events import Cost, Usage
    from bot.limits import Limits
    from bot.store import Database, QuotaStore

    async with await Database.open(tmp_path / "bot.db") as db:
        store = QuotaStore(db, None, Limits.unlimited())
        budgets = [store.budget(1, user, (), f"s{user}") for user in range(1, 9)]
        hops: list[str] = []
        real = type(db.conn)._execute

        async def counted(conn: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
            if conn is db.conn:
                hops.append(getattr(fn, "__name__", repr(fn)))
            return await real(conn, fn, *args, **kwargs)

        monkeypatch.setattr(type(db.conn), "_execute", counted)
        before = store.ledger.batches
        tokens = await asyncio.gather(*(b.reserve("m", Usage(10, 5), 0.001) for b in budgets))
        await asyncio.gather(
            *(b.settle(t, "m", "p", Usage(7, 3), Cost(0.0005)) for b, t in zip(budgets, tokens, strict=True))
        )
        batches = store.ledger.batches - before
        assert batches < 2 * len(budgets)  # the charges did go in batches
        assert len(hops) == batches, f"{len(hops)} hops for {batches} batches: {hops}"
        row = await db.fetchone("SELECT COUNT(*), SUM(prompt_tokens + completion_tokens) FROM usage_ledger")
        assert tuple(row) == (8, 80)  # type: ignore[arg-type]
        assert (await db.fetchone("SELECT COUNT(*) FROM reservations"))[0] == 0  # type: ignore[index]


def test_clients_made_in_one_process_share_one_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each client loaded the CA bundle again (~50 ms of CPU; each in-process bot of the tests made one)."""
    import certifi

    assert shared_tls() is shared_tls()
    default = shared_tls()
    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())  # another CA setting: a context of its own
    assert shared_tls() is not default and shared_tls() is shared_tls()
