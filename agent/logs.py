"""Structured logs: JSON lines when not on a terminal, readable lines on one.

Every secret the process knows (API keys, the bot token) is registered here and replaced by ``***``
in every log line, whatever logged it; prompts are only logged at debug level. The userinfo of any
URL (``http://user:PASS@host`` becomes ``http://***@host``) is a secret too, registered or not.

Redaction is applied three times over, because each catches what the others cannot (issue 14.10, where
9 of 16 kinds of leak got through): to every value of an event, walking nested dicts, lists, tuples,
sets and exceptions; to each local and message of a rich traceback before it is drawn (rich cuts long
values at 80 characters, which would cut a secret in half and past any later match); and to the
rendered line itself, for anything a renderer turns into text by ``repr``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from datetime import UTC, datetime
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import IO, Any

import structlog

_SECRETS: set[str] = set()
_ORDERED: tuple[str, ...] = ()
"""The secrets, longest first, so one that contains another is replaced whole."""
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,30}://)[^\s/?#]{1,512}@")
"""To the last @ (a raw @ in a password). Bounded: with ``[a-z0-9+.-]*`` every word of a page's
"a-a-a-...@" was tried to the text's end, and 80 KB of it took 16 s (tool results are redacted too);
no scheme passes 31 characters, no userinfo 512."""
_HOOK_TOKEN = re.compile(r"(/(?:webhooks|interactions)/\d+/)[A-Za-z0-9_.-]{20,}")
"""The token in a webhook's or an interaction's address: discord.py logs each answer's URL at debug
level, and the token lets whoever reads it post as the bot there (mentions allowed) for 15 minutes."""
_MAX_DEPTH = 8


def register_secret(value: str | None) -> None:
    """Never print ``value``: short values are ignored (they would redact ordinary words)."""
    global _ORDERED
    if value and len(value) >= 8 and value not in _SECRETS:
        _SECRETS.add(value)
        _ORDERED = tuple(sorted(_SECRETS, key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` without registered secrets and without the userinfo of any URL in it."""
    for s in _ORDERED:
        if s in text:
            text = text.replace(s, "***")
    if "@" in text:
        text = _USERINFO.sub(r"\1***@", text)
    if "/webhooks/" in text or "/interactions/" in text:
        text = _HOOK_TOKEN.sub(r"\1***", text)
    return text


def redact_query(url: str) -> str:
    """``url`` redacted, its whole query shown as ``***``: where hosted MCP servers take their key
    (``?api_key=``). Masking registered secrets alone hid it only once a connection had registered it, so
    /config's reply, its listing and, after a restart, /config show wrote the key out."""
    base, query, _ = redact(url).partition("?")
    return base + ("?***" if query else "")


_PLAIN = frozenset((int, float, bool, type(None)))
"""Types that hold no text: most values of a log line (steps, tokens, latencies) return at once."""


def redact_value(value: Any, depth: int = 0) -> Any:
    """``value`` with every string inside it redacted: containers are copied, exceptions become text."""
    if type(value) in _PLAIN:  # first: the isinstance chain below was half of a log line's cost
        return value
    if isinstance(value, str):
        return redact(value)
    if depth >= _MAX_DEPTH:
        return redact(repr(value))
    if isinstance(value, dict):
        return {redact_value(k, depth + 1): redact_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [redact_value(v, depth + 1) for v in value]
        return items if isinstance(value, list | set | frozenset) else tuple(items)
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    if isinstance(value, bytes | bytearray):
        return redact(bytes(value).decode("utf-8", "replace"))
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(repr(value))


_LATER = frozenset(("exc_info", "_record", "_from_structlog"))
"""Drawn later by the exception formatter, which redacts it (see below)."""


def _redact_processor(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for k, v in event_dict.items():
        t = type(v)
        if t is str:  # most values: straight to the text check
            event_dict[k] = redact(v)
        elif t not in _PLAIN and k not in _LATER:
            event_dict[k] = redact_value(v)
    return event_dict


class _Dumps:
    """``json.dumps(obj, default=default)``, the same text, from one C encoder made once: json.dumps builds
    a new ``JSONEncoder`` for every line (structlog's JSONRenderer always passes ``default``), and each
    ``encode`` sets up a new C encoder; together that was about a third of a log line's instructions.

    No circular-reference check: every container in a line has been copied to a bounded depth by
    :func:`redact_value` first, so none can contain itself."""

    def __init__(self) -> None:
        self._default: Any = None
        self._encode: Any = None

    def __call__(self, obj: Any, default: Any) -> str:
        if self._encode is None or default is not self._default:
            self._default = default
            if c_make_encoder is None:  # an interpreter without the C encoder: the plain way
                plain = json.JSONEncoder(default=default).encode
                self._encode = lambda o, _: (plain(o),)
            else:
                self._encode = c_make_encoder(
                    None, default, encode_basestring_ascii, None, ": ", ", ", False, False, True
                )
        return "".join(self._encode(obj, 0))


class _RedactedRenderer:
    """The last word: whatever the renderer drew, redacted once more as text."""

    def __init__(self, renderer: Any) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, name: str, event_dict: dict[str, Any]) -> Any:
        out = self.renderer(logger, name, event_dict)
        return redact(out) if isinstance(out, str) else out


def _scrub_node(node: Any, depth: int = 0) -> None:
    """Redact one rich ``pretty.Node`` tree in place, then cut long values as rich would have."""
    for attr in ("key_repr", "value_repr"):
        text = getattr(node, attr, "")
        if text:
            text = redact(text)
            setattr(node, attr, text if len(text) <= 90 else text[:80] + "…")
    for child in (node.children or []) if depth < 50 else []:
        _scrub_node(child, depth + 1)


def redacted_rich_traceback(sio: IO[str], exc_info: Any) -> None:
    """structlog's rich traceback (locals included), with every local and message redacted first."""
    from rich.console import Console
    from rich.traceback import Traceback

    exc_type, exc_value, tb = exc_info
    if exc_value is None:
        return
    trace = Traceback.extract(exc_type, exc_value, tb, show_locals=True, locals_max_string=None)  # type: ignore[arg-type]
    for stack in trace.stacks:
        stack.exc_value = redact(stack.exc_value)
        stack.notes = [redact(n) for n in stack.notes]
        for frame in stack.frames:
            for node in (frame.locals or {}).values():
                _scrub_node(node)
    sio.write("\n")
    Console(file=sio, color_system="truecolor", width=120).print(
        Traceback(trace, width=120, word_wrap=True, show_locals=True, max_frames=100)
    )


class _UtcStamp:
    """``structlog.processors.TimeStamper(fmt="iso", utc=True)``, the same text (``2026-12-05T07:40:00.123456Z``,
    no fraction at a whole second), with the date and time of the current second made once: formatting a
    whole ``datetime`` was about a sixth of a log line's instructions, on every line."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second, self._prefix = -1, ""

    def __call__(self, _: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        second, micro = divmod(time.time_ns() // 1000, 1_000_000)  # floored, as datetime.now is
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).isoformat()[:19]
        event_dict["timestamp"] = f"{self._prefix}.{micro:06d}Z" if micro else self._prefix + "Z"
        return event_dict


class _NamedWriteLoggerFactory:
    """``structlog.WriteLoggerFactory`` whose loggers keep the name given to ``get_logger(NAME)``."""

    def __init__(self, file: IO[str]) -> None:
        self._file = file

    def __call__(self, *args: Any) -> structlog.WriteLogger:
        out = structlog.WriteLogger(self._file)
        out.name = args[0] if args and isinstance(args[0], str) else None  # type: ignore[attr-defined]
        return out


def _add_name(logger: Any, _: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    if "logger" not in event_dict and (name := getattr(logger, "name", None)):
        event_dict["logger"] = name
    return event_dict


def shared_native(fmt: str = "json") -> list[Any]:
    """Processors for our own log calls: JSON lines get their traceback as text before redaction."""
    return [
        _add_name,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _UtcStamp(),
        *([structlog.processors.format_exc_info] if fmt == "json" else []),
        _redact_processor,
    ]


def configure_logging(level: str = "INFO", fmt: str = "auto", stream: Any = None) -> None:
    """Route structlog and stdlib logging (discord.py, httpx) through one renderer.

    A module's logger is ``structlog.get_logger("its.name")``, lazy and named here (``logger`` in each
    line): ``.bind(logger=...)`` at import built it from the configuration of that moment, so modules
    imported before this call (the bot's services, the quota ledger) wrote console text to stdout,
    unfiltered and unredacted."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    renderer: Any = _RedactedRenderer(
        structlog.dev.ConsoleRenderer(colors=True, exception_formatter=redacted_rich_traceback)
        if fmt == "console"
        else structlog.processors.JSONRenderer(serializer=_Dumps())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _UtcStamp(),
        _redact_processor,
    ]
    # Our own lines go straight to the stream (about 4x cheaper per line than through stdlib logging);
    # stdlib records (discord.py, httpx) are rendered the same way by the formatter below.
    structlog.configure(
        processors=[*shared_native(fmt), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=_NamedWriteLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact_processor,  # the traceback text made just above
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Quiet libraries that log every request at INFO.
    for noisy in ("httpx", "httpcore", "chromadb", "discord.gateway", "discord.client"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
