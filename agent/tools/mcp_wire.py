"""What an MCP server sends about its tools, checked before the model sees it: a tool's input schema (valid
and not too large), a validator for the model's arguments that runs none of the server's regexes, and
a call's result as text and sources, and the registry tool each listed tool becomes."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pydantic

from agent.retry import RetryPolicy
from agent.tools.mcp_config import McpServer
from agent.tools.registry import Tool, ToolOutput, ToolRefused

SEP = "__"
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")
MAX_DESCRIPTION = 1000

PROVIDERS_REFUSE_AT_TOP = frozenset({"anyOf", "oneOf", "allOf"})
"""Keywords Anthropic refuses at the top of a tool's schema (400 "input_schema does not support oneOf,
allOf, or anyOf at the top level", for every request offering the tool: zod's unions and "one of these
two fields" rules publish them). Left out of what the model sees; the arguments are still checked
against the whole schema, and the model is told what failed."""
MAX_SCHEMA_BYTES = 16_000
"""A tool whose schema is larger is left out: every byte is re-sent to the model at every step."""


def checked_schema(raw: Any) -> dict[str, Any] | None:
    schema = dict(raw) if isinstance(raw, Mapping) else {}
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    if schema.get("type") != "object" or len(json.dumps(schema)) > MAX_SCHEMA_BYTES:
        return None
    import jsonschema  # here: 31 ms of every CLI start, for operators who configured MCP servers

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError:
        return None
    return schema


def render_result(server: str, result: Any) -> ToolOutput:
    texts: list[str] = []
    sources: list[str] = []
    for part in getattr(result, "content", None) or []:
        kind = getattr(part, "type", "")
        if kind == "text":
            texts.append(str(part.text))
        elif kind == "resource_link":
            sources.append(str(part.uri))
            texts.append(f"[resource {part.name}: {part.uri}]")
        elif kind == "resource":
            res = part.resource
            texts.append(str(getattr(res, "text", "") or f"[binary resource {res.uri}]"))
        else:  # images and audio: the model is told what arrived, not sent bytes it may not read
            texts.append(f"[{kind} content ({getattr(part, 'mimeType', '?')}) not shown]")
    structured = getattr(result, "structuredContent", None)
    if not texts and structured is not None:
        texts.append(json.dumps(structured, ensure_ascii=False))
    text = "\n".join(texts) or "(no output)"
    if getattr(result, "isError", False):
        raise ToolRefused(f"the {server} MCP server answered with an error: {text}")
    return ToolOutput(text, sources)


def arguments_validator(schema: dict[str, Any]) -> Any:
    """A validator for the arguments that runs none of the server's regexes and fetches nothing.

    Why: they would run on the bot's event loop, where ``^(a+)+$`` against 30 a's and a '!' froze every
    run of every server for minutes. ``pattern`` is left to the server (it checks its own arguments),
    and with ``patternProperties`` anywhere, so are the keywords that match property names by them.
    """
    import jsonschema
    from referencing import Registry  # jsonschema's own resolver library

    base = jsonschema.validators.validator_for(schema)
    names_by_regex = "patternProperties" in json.dumps(schema)
    skip = ["pattern", "patternProperties"]
    if names_by_regex:
        skip += ["additionalProperties", "unevaluatedProperties"]
    # An empty registry: jsonschema's default fetches a "$ref": "http://..." (or file://) with urllib,
    # on the event loop, past the SSRF guard and without a timeout. Such a ref is an error instead.
    return jsonschema.validators.extend(base, dict.fromkeys(skip, _unchecked))(schema, registry=Registry())


def _unchecked(*_: Any) -> None:
    return None


def tool_name(server: str, tool: str) -> str:
    """``server__tool`` within the 64 characters providers accept; a sha256 suffix keeps cut names apart."""
    name = f"{server}{SEP}{_UNSAFE.sub('_', tool)}"
    if len(name) <= 64 and tool == _UNSAFE.sub("_", tool):
        return name
    return name[:55] + "_" + hashlib.sha256(tool.encode()).hexdigest()[:8]


class _AnyArgs(pydantic.BaseModel):
    """The registry's validation step passes everything through; the tool's JSON schema checks it."""

    model_config = pydantic.ConfigDict(extra="allow")


def wire_tool(
    config: McpServer, mcp_tool: Any, call_remote: Callable[[str, dict[str, Any]], Awaitable[Any]]
) -> Tool | None:
    """The registry's :class:`Tool` for one listed tool, named ``server__tool``; None when its schema is refused."""
    schema = checked_schema(getattr(mcp_tool, "inputSchema", None))
    if schema is None:
        return None
    validator = arguments_validator(schema)
    server, remote = config.name, str(mcp_tool.name)
    name = tool_name(server, remote)

    async def call(**arguments: Any) -> ToolOutput:
        problems = sorted(validator.iter_errors(arguments), key=lambda e: list(e.path))
        if problems:
            where = ".".join(str(p) for p in problems[0].path) or "(arguments)"
            raise ToolRefused(f"invalid arguments for {name}: '{where}': {problems[0].message}")
        return render_result(server, await call_remote(remote, arguments))

    description = (mcp_tool.description or remote).strip()
    return Tool(
        name=name,
        description=f"[{server} MCP server] {description}"[:MAX_DESCRIPTION],
        parameters={k: v for k, v in schema.items() if k not in PROVIDERS_REFUSE_AT_TOP},
        fn=call,
        args_model=_AnyArgs,
        timeout=config.timeout,
        max_output=config.max_output,
        retry=RetryPolicy(max_attempts=1),  # a call may have side effects on the server: never repeated
    )
