"""Tool calls on the Chat Completions wire: streamed fragments joined into whole calls (parallel calls
streamed at one index, arguments sent as objects), and the ids sent back with them.

Apart from the rest of the wire format (``openai_wire.py``): a call's id and arguments are their own
small set of odd but real server shapes.
"""

from __future__ import annotations

import hashlib
import json
import string
from typing import Any

from agent.messages import ToolCall

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
"""As :mod:`agent.models.openai_wire` encodes: the JSON httpx's ``json=`` writes."""

_ID_CHARS = string.ascii_letters + string.digits


def wire_id(call_id: str) -> str:
    """A tool call's id as sent: 9 letters and digits, the one shape every server takes. Mistral's API
    (and vLLM or mlx serving Mistral's templates) refuses any other ("Tool call id was call_2_0 but must be
    a-z, A-Z, 0-9, with a length of 9", HTTP 400): every run failed at its second step where the server
    sent no ids (ours are ``call_<turn>_<n>``), and every follow-up of a conversation begun on another
    provider (``toolu_...``, OpenAI's 29 characters). Derived from the id alone, so a call and its result
    still pair and the same history is sent the same way on every step (prompt caches keep hitting)."""
    if len(call_id) == 9 and call_id.isascii() and call_id.isalnum():
        return call_id
    n = int.from_bytes(hashlib.sha256(call_id.encode()).digest()[:8], "big")
    out = []
    for _ in range(9):
        n, r = divmod(n, 62)
        out.append(_ID_CHARS[r])
    return "".join(out)


def arguments_text(value: Any) -> str:
    """A tool call's ``arguments`` as the JSON text OpenAI sends: some servers and proxies send the
    object itself, which joined or parsed as text ended the run in a TypeError."""
    if value is None or isinstance(value, str):
        return value or ""
    return _encode(value)


class ToolCallAssembler:
    """Joins streamed tool-call fragments by their ``index`` into whole calls, in index order.

    A fragment with a new id at an index already in use starts a new call: some servers stream each of
    several parallel calls whole at index 0 (or with no index), which were joined into one call."""

    def __init__(self) -> None:
        self._calls: list[dict[str, Any]] = []
        self._at: dict[int, dict[str, Any]] = {}  # index -> the call it is filling

    def add(self, fragments: list[dict[str, Any]]) -> None:
        at = self._at
        for pos, frag in enumerate(fragments):
            idx = frag.get("index")
            if type(idx) is not int:  # "a" or null beside 0: ordering them raised TypeError, ending the run
                idx = pos
            slot = at.get(idx)
            fid = frag.get("id")
            if slot is None or (fid and slot["id"] and fid != slot["id"]):
                slot = at[idx] = {"id": "", "name": "", "arguments": [], "index": idx}
                self._calls.append(slot)
            if fid:
                slot["id"] = fid
            fn = frag.get("function") or {}
            name = fn.get("name")
            if name and name != slot["name"]:
                # Most servers send the name once; some repeat it whole in every fragment.
                slot["name"] += name
            if fn.get("arguments"):
                slot["arguments"].append(arguments_text(fn["arguments"]))

    def calls(self, turn: int) -> list[ToolCall]:
        """Whole calls; one without an id gets ``call_<turn>_<n>`` (``turn``: the conversation's length),
        unique in the conversation: "call_0" on every step was refused by proxies in front of Anthropic."""
        ordered = sorted(self._calls, key=lambda slot: slot["index"])  # stable: arrival order within one
        return [
            ToolCall(
                id=slot["id"] or f"call_{turn}_{n}", name=slot["name"], arguments="".join(slot["arguments"])
            )
            for n, slot in enumerate(ordered)
        ]
