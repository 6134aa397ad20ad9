"""The operator's MCP servers file (``MCP_SERVERS_FILE``): one checked :class:`McpServer` per table.

Why a module of its own: a mistake in the file must be one line naming the file, the server and the
key, before any connection is tried; this is that check, apart from the connections in ``mcp.py``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.setting_parsers import ConfigError, read_setting_file

__all__ = ["McpConfigError", "McpServer", "load_servers", "server_secrets"]

_SERVER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,23}$")
_SECRET_NAME = re.compile(r"(?i)auth|key|token|secret|pass|cookie|credential")


class McpConfigError(ValueError):
    """The operator's MCP file is wrong; the message names the file, the server and the key."""


@dataclass(frozen=True, slots=True)
class McpServer:
    """One server: ``url`` (streamable HTTP) or ``command`` (+ ``args``, ``env``) for stdio."""

    name: str
    url: str | None = None
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    """stdio only: added to a minimal environment (PATH, HOME, ...); the bot's own secrets never pass."""
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    connect_timeout: float = 10.0
    max_output: int = 8000
    tools: tuple[str, ...] | None = None
    """Only these of the server's tools (all when None)."""

    @property
    def transport(self) -> str:
        return "http" if self.url else "stdio"


_KEYS = {"url", "command", "args", "env", "headers", "timeout", "connect_timeout", "max_output", "tools"}


def _server(path: str, name: str, raw: Any) -> McpServer:
    where = f"{path}: [servers.{name}]"
    if not _SERVER_NAME.match(name):
        raise McpConfigError(
            f"{where}: a server name is 1-24 of a-z, 0-9, '_' and '-' (it prefixes tool names)"
        )
    if not isinstance(raw, dict):
        raise McpConfigError(f"{where} must be a table")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise McpConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    url, command = raw.get("url"), raw.get("command")
    if bool(url) == bool(command):
        raise McpConfigError(f"{where}: give exactly one of url (streamable HTTP) or command (stdio)")
    if url and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        raise McpConfigError(f"{where}: url must start with http:// or https://")

    def strs(key: str) -> tuple[str, ...]:
        v = raw.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise McpConfigError(f"{where}: {key} must be a list of strings")
        return tuple(v)

    def table(key: str) -> dict[str, str]:
        v = raw.get(key, {})
        if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
            raise McpConfigError(f"{where}: {key} must be a table of strings")
        return dict(v)

    def num(key: str, default: float, low: float, high: float) -> float:
        v = raw.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not low <= v <= high:
            raise McpConfigError(f"{where}: {key} must be a number from {low:g} to {high:g}")
        return float(v)

    return McpServer(
        name=name,
        url=url or None,
        command=command or None,
        args=strs("args"),
        env=table("env"),
        headers=table("headers"),
        timeout=num("timeout", 30, 1, 600),
        connect_timeout=num("connect_timeout", 10, 1, 120),
        max_output=int(num("max_output", 8000, 100, 100_000)),
        tools=strs("tools") if "tools" in raw else None,
    )


def load_servers(path: str | os.PathLike[str]) -> list[McpServer]:
    """Read the operator's TOML file (``MCP_SERVERS_FILE``): ``[servers.<name>]`` tables."""
    p = Path(path)
    try:  # the one reader of files settings name: UTF-8 with or without Notepad's byte-order mark
        text = read_setting_file(str(p), "MCP_SERVERS_FILE")
    except ConfigError as e:
        if isinstance(e.__cause__, FileNotFoundError):
            raise McpConfigError(f"MCP_SERVERS_FILE={p}: no such file") from None
        raise McpConfigError(str(e)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise McpConfigError(f"MCP_SERVERS_FILE={p}: cannot read it as TOML: {e}") from None
    if unknown := sorted(set(data) - {"servers"}):  # `[server.x]`: read as no servers, without a word
        raise McpConfigError(
            f"MCP_SERVERS_FILE={p}: unknown table [{unknown[0]}]: the file holds [servers.<name>] tables"
        )
    servers = data.get("servers", {})
    if not isinstance(servers, dict):
        raise McpConfigError(f"MCP_SERVERS_FILE={p}: 'servers' must be a table of [servers.<name>] tables")
    return [_server(str(p), name, raw) for name, raw in servers.items()]


def server_secrets(server: McpServer) -> list[str]:
    """What the operator gave ``server`` that must never be shown: the URL's whole query (``?api_key=...``
    is how many hosted servers take their key; a password in the URL is redacted anyway), and the values
    of headers and (stdio) environment variables named like a credential (``Authorization``,
    ``X-Api-Key``, ``GITHUB_TOKEN``), with the token after an ``Authorization`` scheme on its own: a
    server answering "invalid token ghp_..." put the operator's key in the model's context and on the
    terminal. Other headers (``Accept``) are not secrets: masking them would hide ordinary words."""
    found = []
    if server.url and "?" in server.url:
        found.append(server.url.split("?", 1)[1].split("#", 1)[0])
    for name, value in (*server.headers.items(), *server.env.items()):
        if _SECRET_NAME.search(name) and value.strip():
            found += [value.strip(), value.split()[-1]]
    return found
