"""Per-call cost: genai-prices' bundled data as the base, ``PRICES_FILE`` on top.

Where prices come from, and why:

* ``genai-prices`` (the table pydantic-ai uses) ships its data inside the package and is read from
  there: its ``UpdatePrices`` (which downloads newer data) is never started, so pricing needs no network
  and a price changes only when the package is upgraded. It carries what our own table could not:
  cache writes (5-minute and 1-hour), Gemini's and Claude's tiers above 200k prompt tokens, prices that
  change on a date or by time of day, and per-request fees.
* ``PRICES_FILE`` adds or overrides models (self-hosted ones, models newer than the package), each entry
  with its source and date. Its entries win over the package's.
* A model neither knows costs *unknown*, never 0: a bot that shows $0.00 for an unpriced model invites
  admins to trust a budget that is not being enforced.

Model names are matched as the providers send them (``gpt-5-mini-2025-08-07``, ``claude-sonnet-4-5-
20250929``); names that only one host uses (Groq's ``openai/gpt-oss-120b``, OpenRouter's ``org/model``)
are looked up at the provider that serves ``OPENAI_BASE_URL`` when the name alone finds nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from agent.events import Cost, Usage
from agent.models.price_rates import REPORTED, package_usd, rates_of
from agent.setting_parsers import read_setting_file

_DATE_SUFFIX = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|-\d{4}|-\d{3}|-latest|-preview(-[\w-]+)?)$")
_PROVIDER_PREFIX = re.compile(r"^(openai|anthropic|google|gemini|groq|deepseek|openrouter)[/:]")
_NOT_CHAT = re.compile(
    r"audio|realtime|transcribe|tts|image|embedding|moderation|whisper|search|live|computer-use|"
    r"^(ada|babbage|curie|davinci|text-|chatgpt-|ft:|gpt-3\.5|gpt-4-|gpt-4$)|:|\.ft-|-\d{4}-\d{2}-\d{2}$"
)
"""Package models a tier cannot use (speech, images, embeddings, fine-tune stubs, legacy completions,
dated snapshots of a listed model): left out of :meth:`PriceTable.known_models`."""
MODEL_NAME = re.compile(r"[\w.:/@+\[\]-]{1,200}")
"""A model name as servers report theirs (``openai/gpt-4o-mini``, ``llama3.1:8b``, ``claude-x@2024``,
``team[/]llama``). Any server between the bot and the model can set it: one sent a masked link and a
heading, which the thread's footer showed in the bot's words. Without spaces and parentheses neither
can be written."""
_GENAI_PROVIDER = {"anthropic": "anthropic", "gemini": "google", "google": "google"}
"""Our wire names → genai-prices provider ids. ``openai`` means any OpenAI-compatible host: see above."""

# PRICES_FILE keys (USD per million tokens, per_request in USD) → genai-prices price keys.
_FILE_KEYS = {
    "input": "input_mtok",
    "cached_input": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
    "output": "output_mtok",
    "reasoning": "output_reasoning_mtok",
}


def _genai() -> Any:
    """The bundled snapshot (imported on first use: its data module takes half a second to load)."""
    from genai_prices.data_snapshot import get_snapshot

    return get_snapshot()


@dataclass(frozen=True, slots=True)
class Price:
    """One model's prices (``model_price`` is genai-prices' ``ModelPrice``) and where they come from.

    ``info`` is the package's model entry, whose prices may change on a date: each call is priced at
    the prices in force when it is made.
    """

    model_price: Any
    source: str
    date: str = ""
    info: Any = None

    def at(self, when: datetime | None) -> Any:
        info = self.info
        if info is None:
            return self.model_price
        if not isinstance(info.prices, list):  # one price at all times: no clock to read
            return info.prices
        return info.get_prices(when or datetime.now(UTC))

    def _get(self, key: str) -> float | None:
        value = getattr(self.model_price, key, None)  # tiered prices: the base tier's
        return None if value is None else float(getattr(value, "base", value))

    @property
    def input(self) -> float:
        return self._get("input_mtok") or 0.0

    @property
    def output(self) -> float:
        return self._get("output_mtok") or 0.0

    @property
    def cached_input(self) -> float | None:
        return self._get("cache_read_mtok")


def _model_price(entry: dict[str, Any], origin: str, name: str) -> Any:
    """A ``PRICES_FILE`` entry → genai-prices ``ModelPrice``; ``tiers`` apply above a prompt size."""
    from genai_prices.types import ModelPrice, Tier, TieredPrices
    from genai_prices.types import Usage as GUsage

    def num(v: Any, what: str) -> Decimal:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{origin}: model {name!r}: {what} must be a number ≥ 0, not {v!r}")
        return Decimal(repr(float(v)))

    if "input" not in entry or "output" not in entry:
        raise ValueError(f"{origin}: model {name!r} needs numeric 'input' and 'output' prices")
    # A misspelt price ("cache_read", "per_call") was ignored without a word: those tokens went unpriced.
    for where, keys, allowed in [
        ("", entry, {*_FILE_KEYS, "tiers", "per_request", "source", "date"}),
        *(("a tier's ", t, {*_FILE_KEYS, "above"}) for t in entry.get("tiers") or () if isinstance(t, dict)),
    ]:
        if unknown := sorted(set(keys) - allowed):
            raise ValueError(
                f"{origin}: model {name!r}: {where}{', '.join(map(repr, unknown))} is no price this file "
                f"takes ({', '.join(sorted(allowed))})"
            )
    prices: dict[str, Any] = {
        key: num(entry[k], k) for k, key in _FILE_KEYS.items() if entry.get(k) is not None
    }
    tiers = entry.get("tiers") or []
    if not isinstance(tiers, list):
        raise ValueError(f"{origin}: model {name!r}: 'tiers' must be a list of {{'above': N, ...}}")
    for tier in tiers:
        if not isinstance(tier, dict) or not isinstance(tier.get("above"), int):
            raise ValueError(f"{origin}: model {name!r}: each tier needs an integer 'above' (prompt tokens)")
        for k, key in _FILE_KEYS.items():
            if tier.get(k) is None:
                continue
            if key not in prices:
                raise ValueError(f"{origin}: model {name!r}: a tier prices {k!r}, which has no base price")
            cur = prices[key]
            if not isinstance(cur, TieredPrices):
                cur = prices[key] = TieredPrices(base=cur, tiers=[])
            cur.tiers.append(Tier(start=tier["above"], price=num(tier[k], f"tier {k}")))
            cur.tiers.sort(key=lambda t: t.start)
    if entry.get("per_request") is not None:
        prices["requests_kcount"] = num(entry["per_request"], "per_request") * 1000
    model_price = ModelPrice(**prices)
    try:  # the package checks that the prices fit together (a 1-hour write price needs a write price)
        model_price.calc_price(GUsage(input_tokens=1))
    except ValueError as e:
        raise ValueError(f"{origin}: model {name!r}: {e}") from e
    return model_price


class PriceTable:
    """Prices by model name: ``overrides`` (``PRICES_FILE``) first, then (unless ``base`` is False)
    genai-prices, where ``endpoint`` (``OPENAI_BASE_URL``) finds the names only its host uses."""

    def __init__(
        self, overrides: dict[str, Price] | None = None, *, base: bool = True, endpoint: str | None = None
    ) -> None:
        self._prices = {k.lower(): v for k, v in (overrides or {}).items()}
        self._base = base
        self._endpoint = endpoint
        self._resolved: dict[tuple[str, str | None], Price | None] = {}

    @classmethod
    def from_json(cls, text: str, origin: str = "prices", **kwargs: Any) -> PriceTable:
        """A table of ``{"models": {name: {"input": .., "output": .., ...}}}`` entries (see README)."""
        try:
            data = json.loads(text)
            models = data["models"]
            items = list(models.items())
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{origin}: expected a JSON object with a 'models' mapping ({e})") from e
        out: dict[str, Price] = {}
        for name, entry in items:
            if not isinstance(entry, dict):
                raise ValueError(f"{origin}: model {name!r} needs an object with 'input' and 'output' prices")
            out[name] = Price(
                _model_price(entry, origin, name),
                source=str(entry.get("source") or origin),
                date=str(entry.get("date") or ""),
            )
        return cls(out, **{"base": False, **kwargs})

    def merged(self, other: PriceTable) -> PriceTable:
        """``other``'s entries over ours; the package base and endpoint stay if either table had them."""
        return PriceTable(
            {**self._prices, **other._prices},
            base=self._base or other._base,
            endpoint=other._endpoint or self._endpoint,
        )

    def lookup(self, model: str, provider: str | None = None) -> Price | None:
        """Our entries (exact, without a provider prefix, without a date suffix), then genai-prices."""
        key = (model, provider)
        if key in self._resolved:
            return self._resolved[key]
        found = self._own(model) or (self._package(model, provider) if self._base else None)
        if len(self._resolved) < 4096:  # model names come from config and servers: a small set
            self._resolved[key] = found
        return found

    def _own(self, model: str) -> Price | None:
        name = model.lower().strip()
        bare = _PROVIDER_PREFIX.sub("", name)
        for c in (name, bare, _DATE_SUFFIX.sub("", name), _DATE_SUFFIX.sub("", bare)):
            if c in self._prices:
                return self._prices[c]
        return None

    def _package(self, model: str, provider: str | None) -> Price | None:
        snap = _genai()
        name = model.strip().lower().removeprefix("models/")  # Gemini's REST name
        attempts: list[tuple[str | None, str | None]] = []
        if provider in _GENAI_PROVIDER:
            attempts.append((_GENAI_PROVIDER[provider], None))
        if ":" not in name or name.startswith("ft:"):
            # A tagged name (Ollama's deepseek-r1:7b) is a model on the operator's own server: the
            # package's hosted-API patterns priced it as DeepSeek's API. Only the host serving it
            # (OpenRouter's :free names) may price it; OpenAI's fine-tunes (ft:...) are hosted.
            attempts.append((None, None))
        if self._endpoint:
            attempts.append((None, self._endpoint))
        for provider_id, url in attempts:
            try:
                prov, info = snap.find_provider_model(name, None, provider_id, url)
            except LookupError:
                continue
            model_price = info.get_prices(datetime.now(UTC))
            from genai_prices import __version__

            return Price(model_price, source=f"genai-prices {__version__}: {prov.id}/{info.id}", info=info)
        return None

    def known_models(self) -> list[str]:
        """Model specs with a price that this library can call (tier settings offer these).

        Our own entries; the package's current OpenAI models and those of the host serving
        ``OPENAI_BASE_URL`` as bare names; its Anthropic and Google models as ``anthropic:`` and
        ``gemini:`` specs. Not the package's other hosts (Bedrock, Azure…): no adapter talks to them.
        """
        names = set(self._prices)
        if not self._base:
            return sorted(names)
        snap = _genai()
        prefixes = {"openai": "", "anthropic": "anthropic:", "google": "gemini:"}
        if self._endpoint:
            with contextlib.suppress(LookupError):
                prefixes.setdefault(snap.find_provider(None, None, self._endpoint).id, "")
        for prov in snap.providers:
            if prov.id in prefixes:
                names.update(
                    prefixes[prov.id] + m.id
                    for m in prov.models
                    # Google's list also holds the Claude models Vertex serves: not on Gemini's API.
                    if not m.deprecated
                    and (prov.id != "google" or m.id.startswith("gemini"))
                    and not _NOT_CHAT.search(m.id)
                )
        return sorted(names)

    def priced(self, model: str, usage: Usage, asked: str | None = None) -> tuple[str, Cost]:
        """The name a call is shown and kept under, and its price: priced by the name the server reported
        (a dated snapshot, OpenRouter's actual model), else by ``asked``, the name called: servers report
        their own name for an alias (vLLM's first --served-model-name, LiteLLM), and a PRICES_FILE entry
        for the called name read as unknown. A reported name no model has is replaced by ``asked``. One
        rule for a run's calls and a judge's."""
        if asked and not (isinstance(model, str) and MODEL_NAME.fullmatch(model)):
            model = asked  # a name no model has: shown in the footer and /usage, kept in the ledger
        cost = self.cost(model, usage)
        if not cost.known and asked and asked != model and (alt := self.cost(asked, usage)).known:
            cost = alt
        return model, cost

    def cost(self, model: str, usage: Usage, provider: str | None = None, at: datetime | None = None) -> Cost:
        """The price of *one call's* usage (tiers are chosen by that call's prompt size)."""
        price = self.lookup(model, provider)
        if price is None:
            return Cost(0.0, (model,))
        return Cost(_usd(price, usage, at))

    def estimate(self, model: str, prompt_tokens: int, completion_tokens: int) -> Cost:
        """An upper bound for one call before it is made, for budget reservations.

        Every prompt token is priced at the dearest way it can be billed: uncached, or written to the
        cache (Anthropic's 5-minute writes cost 1.25x input; this library never asks for 1-hour ones),
        at the tier its size falls in; completion tokens at the output price (or the reasoning price,
        if a model prices that apart and higher), plus any per-request fee.
        """
        price = self.lookup(model)
        if price is None:
            return Cost(0.0, (model,))
        mp = price.at(None)
        prompt, completion = max(0, prompt_tokens), max(0, completion_tokens)
        as_input = dict.fromkeys(REPORTED, 0) | {"input_tokens": prompt, "output_tokens": completion}
        as_write = as_input | {"cache_write_tokens": prompt}
        thinking = as_input | {"output_reasoning_tokens": completion}
        return Cost(max(_priced(mp, counts, 1) for counts in (as_input, as_write, thinking)))


def _usd(price: Price, usage: Usage, at: datetime | None) -> float:
    """genai-prices' arithmetic over our counts, clamped so a server's inconsistent numbers cannot fail."""
    mp = price.at(at)
    prompt = max(0, usage.prompt_tokens)
    read = min(max(0, usage.cached_tokens), prompt)
    write = min(max(0, usage.cache_write_tokens), prompt - read)
    out = max(0, usage.completion_tokens)
    counts = {
        "input_tokens": prompt,
        "cache_read_tokens": read,
        "cache_write_tokens": write,
        "cache_write_1h_tokens": min(max(0, usage.cache_write_1h_tokens), write),
        "output_tokens": out,
        "output_reasoning_tokens": min(max(0, usage.reasoning_tokens), out),
    }
    return _priced(mp, counts, usage.requests)


def _priced(mp: Any, counts: dict[str, int], requests: int) -> float:
    """``counts`` (consistent, as :func:`_usd` makes them) at ``mp``, plus its fee for ``requests``."""
    rates = rates_of(mp)
    usd = rates.usd(counts) if rates is not None else None
    if usd is None:
        usd = package_usd(mp, counts)
    fee = vars(mp).get("requests_kcount")  # not getattr: a missing price key costs a registry search
    if fee:
        usd += float(fee) / 1000 * max(0, requests)
    return usd


def _load(override: str | None, endpoint: str | None) -> PriceTable:
    table = PriceTable(endpoint=endpoint)
    if override:
        text = read_setting_file(override, "PRICES_FILE")  # a ConfigError, so a ValueError
        table = table.merged(PriceTable.from_json(text, f"PRICES_FILE={override}"))
    return table


_default = PriceTable()


def use_prices_file(path: str | None, endpoint: str | None = None) -> None:
    """Set ``PRICES_FILE`` (and ``OPENAI_BASE_URL``, whose host prices bare model names) from the parsed
    settings, once, at start-up; a file that cannot be read or parsed is a ConfigError naming the
    setting now, not on the first priced step."""
    global _default
    from agent.config import ConfigError

    try:
        _default = _load(path or None, endpoint or None)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def default_prices() -> PriceTable:
    """genai-prices with ``PRICES_FILE`` over it; bare names also looked up at ``OPENAI_BASE_URL``'s host
    (both as :func:`use_prices_file` set them)."""
    return _default
