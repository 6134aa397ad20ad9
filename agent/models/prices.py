"""Per-call cost from a price table kept as data (``prices.json``, overridable by ``PRICES_FILE``).

A model the table does not know costs *unknown*, never 0: a bot that shows $0.00 for an unpriced
model invites admins to trust a budget that is not being enforced.

Decision: our own table rather than genai-prices, because the issue asks for a reviewable data file
with a source and date per entry, and admins of self-hosted models need to add their own prices.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from agent.events import Cost, Usage

_DATE_SUFFIX = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|-\d{4}|-\d{3}|-latest|-preview(-[\w-]+)?)$")
_PROVIDER_PREFIX = re.compile(r"^(openai|anthropic|google|groq|deepseek|openrouter)[/:]")


@dataclass(frozen=True, slots=True)
class Price:
    input: float
    output: float
    cached_input: float | None = None
    source: str = ""
    date: str = ""


class PriceTable:
    def __init__(self, prices: dict[str, Price]) -> None:
        self._prices = {k.lower(): v for k, v in prices.items()}
        self._resolved: dict[str, Price | None] = {}

    @classmethod
    def from_json(cls, text: str, origin: str = "prices") -> PriceTable:
        try:
            data = json.loads(text)
            models = data["models"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{origin}: expected a JSON object with a 'models' mapping ({e})") from e
        out: dict[str, Price] = {}
        for name, entry in models.items():
            try:
                out[name] = Price(
                    input=float(entry["input"]),
                    output=float(entry["output"]),
                    cached_input=None if entry.get("cached_input") is None else float(entry["cached_input"]),
                    source=str(entry.get("source", "")),
                    date=str(entry.get("date", "")),
                )
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(
                    f"{origin}: model {name!r} needs numeric 'input' and 'output' prices ({e})"
                ) from e
        return cls(out)

    def merged(self, other: PriceTable) -> PriceTable:
        return PriceTable({**self._prices, **other._prices})

    def lookup(self, model: str) -> Price | None:
        """Exact name first, then without a provider prefix, then without a date/version suffix."""
        try:
            return self._resolved[model]
        except KeyError:
            pass
        found = self._lookup(model)
        if len(self._resolved) < 4096:  # model names come from config and servers: a small set
            self._resolved[model] = found
        return found

    def _lookup(self, model: str) -> Price | None:
        name = model.lower().strip()
        candidates = [name, _PROVIDER_PREFIX.sub("", name)]
        for c in list(candidates):
            stripped = _DATE_SUFFIX.sub("", c)
            if stripped != c:
                candidates.append(stripped)
        for c in candidates:
            if c in self._prices:
                return self._prices[c]
        return None

    def known_models(self) -> list[str]:
        return sorted(self._prices)

    def cost(self, model: str, usage: Usage) -> Cost:
        price = self.lookup(model)
        if price is None:
            return Cost(0.0, (model,))
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        cached_rate = price.cached_input if price.cached_input is not None else price.input
        usd = (
            (usage.prompt_tokens - cached) * price.input
            + cached * cached_rate
            + usage.completion_tokens * price.output
        ) / 1_000_000
        return Cost(usd)


@lru_cache(maxsize=4)
def _load(override: str | None) -> PriceTable:
    table = PriceTable.from_json(
        resources.files("agent.models").joinpath("prices.json").read_text(), "prices.json"
    )
    if override:
        path = Path(override)
        try:
            text = path.read_text()
        except OSError as e:
            raise ValueError(f"PRICES_FILE={override}: cannot read it ({e.strerror})") from e
        table = table.merged(PriceTable.from_json(text, f"PRICES_FILE={override}"))
    return table


_prices_file: str | None = None


def use_prices_file(path: str | None) -> None:
    """Set ``PRICES_FILE`` from the parsed settings (once, at start-up); a file that cannot be read or
    parsed is a ConfigError naming the setting now, not on the first priced step."""
    global _prices_file
    from agent.config import ConfigError

    try:
        _load(path or None)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    _prices_file = path or None


def default_prices() -> PriceTable:
    return _load(_prices_file)
