"""Security principles that did not hold yet, each driven where a hostile member or server meets it:
an MCP URL whose name points inside, a model answer read whole past its bound, a stdio MCP server whose
children leave its process group, and what probing the same rooms found. In-process where possible."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

from bot.guild_mcp import GuildMcp


def _resolver(answers: dict[str, list[str]]) -> Callable[[str, int], Awaitable[list[str]]]:
    """A stand-in for DNS: each name answers the addresses given, any other has no such name."""

    async def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "no such name")
        return answers[host]

    return resolve


async def test_config_mcp_refuses_a_name_that_resolves_to_a_private_address() -> None:
    """`/config mcp url:https://lan.example/mcp`, whose name answers 10.0.0.5 (or ::ffff:127.0.0.1), was
    accepted with a ✅ and then left out of every turn ("refused to connect"); only literal addresses were
    refused when added. A name with no address yet (not deployed) and a public one are still accepted."""
    guild_mcp = GuildMcp(
        resolver=_resolver(
            {
                "lan.example": ["10.0.0.5"],
                "sneaky.example": ["93.184.216.34", "::ffff:127.0.0.1"],
                "public.example": ["93.184.216.34"],
            }
        )
    )
    lan = await guild_mcp.refusal("https://lan.example/mcp")
    assert lan is not None and "lan.example (which resolves to 10.0.0.5)" in lan, lan
    assert "private address" in lan, lan
    sneaky = await guild_mcp.refusal("http://sneaky.example:8080/mcp")
    assert sneaky is not None and "loopback address (wrapped in IPv6)" in sneaky, sneaky
    assert await guild_mcp.refusal("https://public.example/mcp") is None
    assert await guild_mcp.refusal("https://not-yet.example/mcp") is None
