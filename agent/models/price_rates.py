"""genai-prices' ``ModelPrice`` compiled once into exact integer rates (issue 15.7).

genai-prices' ``calc_price`` took ~80-270 µs a call (it resolves and validates its unit registry every
time), once per agent step and three times per budget hold; the compiled rates give the same float in
about a microsecond (``bench/loop_overhead.py``: engine CPU per step 1.58x -> ~1.3x the minimal loop with
this and the loop trims). :mod:`agent.models.prices` decides what to price; this module only does the
arithmetic, and falls back to the package wherever it cannot be exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any


def package_usd(mp: Any, counts: dict[str, int]) -> float:
    """genai-prices' own ``calc_price`` (without the per-request fee, which :func:`agent.models.prices._usd` adds per request)."""
    from genai_prices.types import ModelPrice
    from genai_prices.types import Usage as GUsage

    fields = {k: v for k, v in vars(mp).items() if v is not None}
    fields.pop("requests_kcount", None)
    return float(ModelPrice(**fields).calc_price(GUsage(**counts))["total_price"])


REPORTED = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "output_reasoning_tokens",
)
"""The genai-prices usage keys :func:`agent.models.prices._usd` reports."""
_PROBES = tuple(
    {
        "input_tokens": prompt,
        "cache_read_tokens": prompt // 3,
        "cache_write_tokens": prompt // 5,
        "cache_write_1h_tokens": prompt // 11,
        "output_tokens": 7_019,
        "output_reasoning_tokens": 3_001,
    }
    for prompt in (1_009, 300_007)  # below and above the usual 200k-token tier
)


@dataclass(frozen=True, slots=True)
class Rates:
    """One ``ModelPrice`` compiled once. The package sums exact Decimals (``price * count / per`` per unit), then makes a float of the sum.
    Here each rate is an integer number of ``1/scale`` USD per unit, so the sum is an exact integer and
    ``total / scale`` is that same value correctly rounded, as the package's float is: the same float,
    in about a microsecond. Sums too large for the package's 28 digits to hold exactly go to the package.

    ``units`` are (usage key, base rate, tiers highest first as (prompt tokens above, rate)) of the priced
    units :data:`REPORTED`; ``leaves`` are (usage key, the priced keys nested in it) in the order the
    package subtracts them (a cache read is part of the input, so the input rate applies to input minus
    reads and writes).
    """

    units: tuple[tuple[str, int, tuple[tuple[int, int], ...]], ...]
    leaves: tuple[tuple[str, tuple[str, ...]], ...]
    scale: int
    limit: int
    """Totals from this many units of ``1/scale`` on are past the package's exact Decimals."""

    @classmethod
    def compile(cls, mp: Any) -> Rates | None:
        """The rates of ``mp``, or None when only the package can price it (a price key it does not know,
        prices it rejects: its own path then says why).

        A priced unit :func:`agent.models.prices._usd` does not report (web searches, audio tokens) counts 0, as the package
        infers for it: none of the reported units overlaps another unit without nesting in it."""
        from genai_prices.data_units import unit_data
        from genai_prices.types import TieredPrices

        by_price_key = {u.get("price_key", k): k for k, u in unit_data.items()}
        priced: dict[str, tuple[Decimal, tuple[tuple[int, Decimal], ...]]] = {}
        for key, value in vars(mp).items():
            if key.startswith("_") or value is None or key == "requests_kcount":
                continue
            usage_key = by_price_key.get(key)
            if usage_key is None:
                return None
            if isinstance(value, TieredPrices):
                base, tiers = value.base, tuple((t.start, t.price) for t in reversed(value.tiers))
            else:
                base, tiers = value, ()
            if not all(isinstance(p, Decimal) and p.is_finite() for p in (base, *(p for _, p in tiers))):
                return None
            priced[usage_key] = (base, tiers)
        dims = {k: unit_data[k].get("dimensions", {}).items() for k in {*priced, *REPORTED}}
        # Only the reported units can count more than 0: they alone need a rate (all are per token) and
        # a place in the subtraction, unless an unreported one holds a reported one (it never does today).
        billed = [k for k in priced if k in REPORTED]
        if any(dims[k] < dims[r] for k in priced if k not in REPORTED for r in REPORTED):
            return None
        order = sorted(billed, key=lambda k: (-len(dims[k]), k))
        leaves = tuple((k, tuple(d for d in order if d != k and dims[k] <= dims[d])) for k in order)
        exact = [
            Fraction(p) / int(unit_data[k]["per"])
            for k in billed
            for p in (priced[k][0], *(p for _, p in priced[k][1]))
        ]
        scale = math.lcm(1, *(f.denominator for f in exact))
        # The package's sums are exact while they have at most 28 significant digits: in units of
        # 1/scale, while total * (10**k // scale) < 10**28 for the least k with 10**k a multiple of scale.
        k = next((k for k in range(64) if 10**k % scale == 0), None)
        if k is None:
            return None
        limit = (10**28 - 1) // (10**k // scale) + 1

        def rate(k: str, p: Decimal) -> int:
            return int(Fraction(p) / int(unit_data[k]["per"]) * scale)

        units = tuple(
            (k, rate(k, priced[k][0]), tuple((start, rate(k, p)) for start, p in priced[k][1]))
            for k in billed
        )
        rates = cls(units, leaves, scale, limit)
        # Checked against the package on a prompt below and one above the usual 200k tier: it validates
        # the prices together (a 1-hour write price needs a write price), and a package upgrade that
        # changes its arithmetic falls back to the package instead of pricing differently.
        try:
            same = all(rates.usd(c) == package_usd(mp, c) for c in _PROBES)
        except ValueError:
            return None
        return rates if same else None

    def usd(self, counts: dict[str, int]) -> float | None:
        """The price of ``counts``; None if they do not nest (the package reports that as an error) or
        the sum is beyond exact."""
        leaf: dict[str, int] = {}
        for key, nested in self.leaves:
            n = counts[key]
            for d in nested:
                n -= leaf[d]
            if n < 0:
                return None
            leaf[key] = n
        prompt = counts["input_tokens"]
        total = 0
        for key, rate, tiers in self.units:
            n = leaf[key]
            if n:
                for start, tier_rate in tiers:  # every token at the highest tier the prompt is above
                    if prompt > start:
                        rate = tier_rate
                        break
                total += rate * n
        return total / self.scale if total < self.limit else None


_RATES: dict[int, tuple[Any, Rates | None]] = {}
"""Compiled rates by ``id`` of the package's ``ModelPrice`` (kept alive beside them so the id stays its
own). A dated price is another ``ModelPrice``, so the key changes with the date; the tier is chosen per
call from its prompt size."""


def rates_of(mp: Any) -> Rates | None:
    """The compiled rates of ``mp`` (None: only the package can price it), compiled once per price."""
    hit = _RATES.get(id(mp))
    if hit is not None and hit[0] is mp:
        return hit[1]
    rates = Rates.compile(mp)
    if len(_RATES) < 4096:  # one entry per model and price period in use: a small set
        _RATES[id(mp)] = (mp, rates)
    return rates
