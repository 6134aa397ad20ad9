"""Tools: a decorator that turns a typed function into a JSON-schema tool, and a registry that runs them.

Whatever the model sends (bad JSON, wrong types, unknown names) ends as an observation the model can
read and correct; nothing a model writes can raise out of :meth:`ToolRegistry.execute`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Protocol, get_type_hints

import docstring_parser
import pydantic

from agent.logs import redact
from agent.messages import ToolCall
from agent.retry import OnRetry, RetryPolicy
from agent.setting_parsers import Rate

_TOOL_RETRY = RetryPolicy(max_attempts=3, initial=0.5, maximum=8.0)
_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


class TransientToolError(Exception):
    """Raise from a tool for a failure that may pass on its own (a timeout upstream, a 503).

    ``retry_after`` (seconds, e.g. from :func:`agent.retry.parse_retry_after`) makes the retry wait at
    least that long."""

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ToolRefused(Exception):
    """Raise from a tool to refuse with a message meant for the model (not retried, not a crash)."""


@dataclass(slots=True)
class ToolContext:
    """What a tool may know about the run calling it. Declare a parameter typed ``ToolContext`` to get it."""

    session_id: str = ""
    namespace: str | None = None
    """The memory/rate-limit namespace: the Discord guild id, or ``None`` in terminal mode."""
    user_id: str | None = None
    workspace: Path | None = None
    services: dict[str, Any] = field(default_factory=dict)
    """Shared services tools need (memory store, http client, settings), keyed by name."""


@dataclass(slots=True)
class ToolOutput:
    """A tool result with the URLs it drew from, so answers can cite them."""

    text: str
    sources: list[str] = field(default_factory=list)
    full_text: str | None = None
    """More of the result than ``text`` (one window of it) holds: what a reader model reads, when the
    run has one (:mod:`agent.reader`). The agent model itself only ever gets ``text``."""
    failed: bool = False
    """The tool ran but what it ran did not (code that did not finish, or was killed): shown as a failed
    call (``ask``'s ✗, the thread's ⚠️), not a ✓ beside "did not finish". ``text`` still says why."""


@dataclass(slots=True)
class ToolOutcome:
    output: str
    is_error: bool = False
    truncated: bool = False
    sources: list[str] = field(default_factory=list)
    arguments: dict[str, Any] | None = None
    duration: float = 0.0
    full_text: str | None = None
    read_by: str | None = None
    """The reader model whose notes replaced ``output`` (see :mod:`agent.reader`)."""
    source_chars: int = 0
    """How long the result the reader read was."""
    reader_failed: str | None = None
    """Why the reader model could not read it (``output`` is then the tool's own, as without a reader)."""


class ToolGuard(Protocol):
    """Checked before every call (rate limits, per-server switches). Returns a refusal text, or None."""

    async def check(self, tool: Tool, ctx: ToolContext) -> str | None: ...


@dataclass(slots=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    args_model: type[pydantic.BaseModel]
    context_param: str | None = None
    timeout: float = 30.0
    max_output: int = 8000
    retry: RetryPolicy = _TOOL_RETRY
    """Only :class:`TransientToolError` is retried: anything else a tool raises is not transient."""
    default_rate: Rate | None = None
    """The rate limit when ``TOOL_RATE_LIMITS`` names none for this tool (MCP tools get one). Kept on
    the tool, not in the guard's table: per-server MCP names would pile up there for the process's life."""
    is_async: bool = field(init=False)
    """Checked once here: ``inspect.iscoroutinefunction`` on every call was a measurable part of a step."""

    def __post_init__(self) -> None:
        self.is_async = inspect.iscoroutinefunction(self.fn)

    def spec(self) -> dict[str, Any]:
        """Neutral function spec; adapters wrap it in their wire format."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


def _doc_parts(doc: str) -> tuple[str, dict[str, str]]:
    """A Google-style docstring's summary and ``Args:`` descriptions (other sections are not for the model)."""
    d = docstring_parser.google.parse(inspect.cleandoc(doc))
    summary = ("\n\n" if d.blank_after_short_description else "\n").join(
        p for p in (d.short_description, d.long_description) if p
    )
    return summary, {
        p.arg_name: " ".join(ln.strip() for ln in (p.description or "").splitlines()) for p in d.params
    }


def _strip_titles(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_titles(v) for k, v in schema.items() if k != "title" or not isinstance(v, str)}
    if isinstance(schema, list):
        return [_strip_titles(v) for v in schema]
    return schema


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float = 30.0,
    max_output: int = 8000,
    max_attempts: int = 3,
    retry_initial: float = 0.5,
    retry_max: float = 8.0,
) -> Any:
    """Make a :class:`Tool` from a typed function (sync or async).

    The JSON Schema comes from the type hints, descriptions from the docstring's ``Args:`` section.
    """

    def build(f: Callable[..., Any]) -> Tool:
        tool_name = name or f.__name__
        if not _NAME_RE.match(tool_name):
            raise ValueError(f"tool name {tool_name!r} must match {_NAME_RE.pattern}")
        summary, arg_docs = _doc_parts(f.__doc__ or "")
        hints = get_type_hints(f, include_extras=True)
        sig = inspect.signature(f)
        fields: dict[str, Any] = {}
        context_param = None
        for pname, param in sig.parameters.items():
            ann = hints.get(pname, Any)
            if ann is ToolContext:
                context_param = pname
                continue
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TypeError(f"tool {tool_name}: *args/**kwargs cannot be described to a model")
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[pname] = (ann, pydantic.Field(default, description=arg_docs.get(pname)))
        model = pydantic.create_model(  # type: ignore[call-overload]
            f"{tool_name}_args", __config__=pydantic.ConfigDict(extra="forbid"), **fields
        )
        schema = _strip_titles(model.model_json_schema())
        schema.setdefault("properties", {})
        schema.pop("additionalProperties", None)
        return Tool(
            name=tool_name,
            description=description or summary or tool_name,
            parameters=schema,
            fn=f,
            args_model=model,
            context_param=context_param,
            timeout=timeout,
            max_output=max_output,
            retry=RetryPolicy(max_attempts, retry_initial, retry_max),
        )

    if fn is not None:
        return build(fn)
    return build


def _format_validation_error(tool_name: str, err: pydantic.ValidationError) -> str:
    problems = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "(arguments)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown argument"
        problems.append(f"'{loc}': {msg}")
    return f"invalid arguments for {tool_name}: " + "; ".join(problems)


MAX_SOURCES = 20
"""Sources one call may cite (web_search returns at most 20 results). An MCP server's answer listed
130,000 resource links in its 8 MB, and the run's de-duplication of sources is quadratic: the event
loop stood still for minutes, for every server."""
MAX_SOURCE_CHARS = 2048
"""A longer source is no citation (browsers and Discord give up on such URLs): an MCP resource link of
1 MB was printed whole on the terminal's sources line."""


def _render(value: Any) -> tuple[str, list[str], str | None]:
    if isinstance(value, ToolOutput):
        cited = islice((redact(s) for s in value.sources if len(s) <= MAX_SOURCE_CHARS), MAX_SOURCES)
        return value.text, list(cited), value.full_text
    if isinstance(value, str):
        return value, [], None
    if value is None:
        return "(no output)", [], None
    try:
        return json.dumps(value, ensure_ascii=False, default=str), [], None
    except (TypeError, ValueError):
        return str(value), [], None


def cap_output(text: str, limit: int) -> tuple[str, bool]:
    """Cut ``text`` to ``limit`` characters and tell the model so, or return it unchanged."""
    if len(text) <= limit:
        return text, False
    note = f"\n[output truncated: showing the first {limit} of {len(text)} characters]"
    return text[:limit] + note, True


def text_window(text: str, start: int, size: int, again: str) -> tuple[str, str]:
    """(``size`` characters of ``text`` from ``start``, a note saying which, '' when it is all);
    ``again`` names the call that reads on ("read_file")."""
    total = len(text)
    start = min(max(start, 0), total)
    window = text[start : start + size]
    end = start + len(window)
    if not start and end >= total:
        return window, ""
    more = f"; {again} again with start={end} for more" if end < total else ""
    return window, f"[characters {start}-{end} of {total}{more}]"


class ToolRegistry:
    """Tools by name, plus the guards that may refuse a call."""

    def __init__(self, tools: Iterable[Tool] = (), guards: Sequence[ToolGuard] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self.guards: list[ToolGuard] = list(guards)
        for t in tools:
            self.register(t)

    def register(self, t: Tool) -> Tool:
        if t.name in self._tools:
            raise ValueError(f"a tool named {t.name!r} is already registered")
        self._tools[t.name] = t
        return t

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return list(self._tools)

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def specs(self) -> list[dict[str, Any]]:
        return [t.spec() for t in self._tools.values()]

    def subset(self, names: Iterable[str] | None) -> ToolRegistry:
        """A registry holding only ``names`` (all when None), sharing the guards."""
        keep = set(self._tools) if names is None else set(names)
        return ToolRegistry([t for n, t in self._tools.items() if n in keep], self.guards)

    def parse(
        self, call: ToolCall, parsed: dict[str, Any] | None = None
    ) -> tuple[Tool | None, dict[str, Any] | None, str | None]:
        """Resolve and validate a call: (tool, validated kwargs, None) or (tool?, None, error text).
        ``parsed``: the call's arguments already read as a JSON object (the loop reads them once for its
        event), else they are read here."""
        t = self._tools.get(call.name)
        if t is None:
            avail = ", ".join(self._tools) or "(none)"
            return None, None, f"unknown tool '{call.name}'. Available tools: {avail}"
        args: Any = parsed
        if args is None:
            raw = call.arguments.strip() if call.arguments else ""
            try:
                args = json.loads(raw) if raw else {}
            except (json.JSONDecodeError, RecursionError) as e:  # deep nesting raises RecursionError
                why = f"{e.msg} at position {e.pos}" if isinstance(e, ValueError) else "nested too deeply"
                return t, None, f"arguments for {t.name} are not valid JSON ({why}); send one JSON object"
        if not isinstance(args, dict):
            return t, None, f"arguments for {t.name} must be a JSON object, got {type(args).__name__}"
        try:
            validated = t.args_model.model_validate(args)
        except pydantic.ValidationError as e:
            return t, None, _format_validation_error(t.name, e)
        kwargs = dict(validated.__dict__)  # the fields, in order (getattr per field cost more)
        return t, kwargs | (validated.model_extra or {}), None  # extras: tools whose schema is JSON (MCP)

    async def execute(
        self,
        call: ToolCall,
        ctx: ToolContext,
        on_retry: OnRetry | None = None,
        parsed: dict[str, Any] | None = None,
    ) -> ToolOutcome:
        """Run ``call`` (``parsed``: its arguments already read, see :meth:`parse`)."""
        started = time.monotonic()
        t, kwargs, problem = self.parse(call, parsed)
        if problem is not None or t is None or kwargs is None:
            return ToolOutcome(_error_json(problem or "invalid call"), is_error=True)
        for guard in self.guards:
            refusal = await guard.check(t, ctx)
            if refusal:
                return ToolOutcome(_error_json(refusal), True, arguments=kwargs)
        call_kwargs = {**kwargs, t.context_param: ctx} if t.context_param else dict(kwargs)
        try:
            value = await t.retry.call(
                lambda: self._invoke(t, call_kwargs), lambda e: isinstance(e, TransientToolError), on_retry
            )
        except ToolRefused as e:
            problem = str(e)
        except TimeoutError:
            problem = f"{t.name} timed out after {t.timeout:g} s"
        except Exception as e:
            problem = describe_error(e)
        else:
            text, sources, full = _render(value)
            # A page, a search result or an MCP server's answer may echo a key (an error quoting the
            # Authorization header it got; run_python printing a .env): the model and the terminal
            # never see a registered secret, whichever tool carried it.
            text, full = redact(text), None if full is None else redact(full)
            if full is None and len(text) > t.max_output:
                full = text  # a reader may read what the cap cuts off for the agent model
            text, truncated = cap_output(text, t.max_output)
            failed = isinstance(value, ToolOutput) and value.failed
            return ToolOutcome(text, failed, truncated, sources, kwargs, time.monotonic() - started, full)
        # An error is cut at the tool's cap as a result is (2000 at least, so a small cap keeps the reason):
        # an MCP server's isError answer of 1.5 MB reached the model whole, and again at every later step.
        problem, cut = cap_output(problem, max(t.max_output, 2000))
        return ToolOutcome(
            _error_json(problem), True, cut, arguments=kwargs, duration=time.monotonic() - started
        )

    @staticmethod
    async def _invoke(t: Tool, kwargs: dict[str, Any]) -> Any:
        async with asyncio.timeout(t.timeout):
            if t.is_async:
                return await t.fn(**kwargs)
            return await asyncio.to_thread(t.fn, **kwargs)


def describe_error(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _error_json(message: str) -> str:
    return json.dumps({"error": redact(message)}, ensure_ascii=False)
