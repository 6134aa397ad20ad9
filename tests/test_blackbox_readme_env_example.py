"""``.env.example`` is the operator's reference (README: "Every setting, with its default, is in
``.env.example``"): besides the default (tests/test_settings_documented.py), each bounded setting's comment
states the range the code enforces, so a value is not first learnt to be wrong from a refused start-up."""

from __future__ import annotations

import re

import pytest

from agent.config import AgentSettings
from bot.config import BotSettings
from bot.limits import LIMIT_BOUNDS, QuotaEnv
from tests.settings_names import ROOT

LINES = (ROOT / ".env.example").read_text().splitlines()
SETTING = re.compile(r"^[A-Z][A-Z0-9_]*=")


def comment_above(key: str) -> str:
    """The comment lines right above ``key`` (or above the run of settings it is part of), numbers without
    thousands separators."""
    i = next(i for i, line in enumerate(LINES) if line.startswith(f"{key}="))
    while i > 0 and SETTING.match(LINES[i - 1]):
        i -= 1
    block: list[str] = []
    while i > 0 and LINES[i - 1].startswith("#"):
        i -= 1
        block.insert(0, LINES[i])
    return re.sub(r"(?<=\d)[,_](?=\d{3})", "", " ".join(block))


def num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) and x < 1 else str(int(x))


def bounds() -> dict[str, tuple[str, str | None]]:
    """env name -> (how the lower bound reads, the upper bound or None), for every bounded setting."""
    out: dict[str, tuple[str, str | None]] = {}
    quota = {f.alias: name for name, f in QuotaEnv.model_fields.items()}
    for cls in (AgentSettings, BotSettings):
        for field in cls.model_fields.values():
            alias = str(field.alias)
            if alias in quota and quota[alias] in LIMIT_BOUNDS:  # 0 = unlimited, else LIMIT_BOUNDS
                lo, hi = LIMIT_BOUNDS[quota[alias]]
                out[alias] = (num(lo), num(hi))
                continue
            got = {a: getattr(m, a) for m in field.metadata for a in ("ge", "gt", "le") if hasattr(m, a)}
            got = {a: v for a, v in got.items() if v is not None}
            if not got:
                continue
            low = f"above {num(got['gt'])}" if "gt" in got else num(got["ge"])
            out[alias] = (low, num(got["le"]) if "le" in got else None)
    return out


@pytest.mark.parametrize(("key", "bound"), sorted(bounds().items()))
def test_every_bounded_setting_states_its_range(key: str, bound: tuple[str, str | None]) -> None:
    low, high = bound
    text = comment_above(key)
    if high is None:
        ok = f"at least {low}" in text if low[0].isdigit() else low in text  # "at least 1", "above 0"
        assert ok, f"{key}: .env.example should say '{low}' / 'at least {low}' in: {text!r}"
    elif low.startswith("above"):
        assert low in text and high in text, (
            f"{key}: .env.example should say '{low}, at most {high}': {text!r}"
        )
    else:
        assert f"{low}-{high}" in text or f"{low} to {high}" in text, f"{key}: '{low}-{high}' not in {text!r}"
