"""Costs priced exactly: each provider's usage object as its API documents it, against the published prices.

The expected figures are worked out by hand from the providers' price pages (USD per million tokens), not
read back from the price table, so a wrong parse, a wrong rate or a stale package all fail here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.events import Usage
from agent.models import anthropic, gemini, openai_wire
from agent.models.factory import split_spec
from agent.models.prices import PriceTable
from agent.models.tiers import load_tiers

BASE = PriceTable()  # genai-prices' bundled data only: no PRICES_FILE from the environment

# (model, usage object as the API returns it, expected USD)
OPENAI = [
    # gpt-5: $1.25 input, $0.125 cached input, $10 output (reasoning is part of completion_tokens).
    (
        "gpt-5-2025-08-07",
        {
            "prompt_tokens": 250_000,
            "completion_tokens": 60_000,
            "total_tokens": 310_000,
            "prompt_tokens_details": {"cached_tokens": 200_000, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 40_000, "audio_tokens": 0},
        },
        (50_000 * 1.25 + 200_000 * 0.125 + 60_000 * 10) / 1e6,  # $0.69
    ),
    # gpt-4.1-mini: $0.40 input, $0.10 cached, $1.60 output.
    (
        "gpt-4.1-mini",
        {
            "prompt_tokens": 900_000,
            "completion_tokens": 30_000,
            "prompt_tokens_details": {"cached_tokens": 512_000},
        },
        (388_000 * 0.40 + 512_000 * 0.10 + 30_000 * 1.60) / 1e6,  # $0.25
    ),
    # gpt-5-mini: $0.25 / $0.025 / $2; no cache hit reported at all.
    (
        "gpt-5-mini",
        {"prompt_tokens": 120_000, "completion_tokens": 90_000},
        (120_000 * 0.25 + 90_000 * 2) / 1e6,
    ),
]

ANTHROPIC = [
    # claude-sonnet-4-5: $3 input, $3.75 5-minute cache write, $0.30 cache read, $15 output.
    # input_tokens counts only what follows the last breakpoint: the three input counts are disjoint.
    (
        "claude-sonnet-4-5-20250929",
        {
            "input_tokens": 20_000,
            "cache_creation_input_tokens": 100_000,
            "cache_read_input_tokens": 50_000,
            "cache_creation": {"ephemeral_5m_input_tokens": 100_000, "ephemeral_1h_input_tokens": 0},
            "output_tokens": 8_000,
        },
        (20_000 * 3 + 100_000 * 3.75 + 50_000 * 0.30 + 8_000 * 15) / 1e6,  # $0.57
    ),
    # claude-haiku-4-5: $1 input, $1.25 5-minute write, $2 1-hour write, $0.10 read, $5 output.
    (
        "claude-haiku-4-5",
        {
            "input_tokens": 10_000,
            "cache_creation_input_tokens": 60_000,
            "cache_read_input_tokens": 100_000,
            "cache_creation": {"ephemeral_5m_input_tokens": 20_000, "ephemeral_1h_input_tokens": 40_000},
            "output_tokens": 4_000,
        },
        (10_000 * 1 + 20_000 * 1.25 + 40_000 * 2 + 100_000 * 0.10 + 4_000 * 5) / 1e6,  # $0.15
    ),
    # claude-opus-4-5: $5 / $6.25 write / $0.50 read / $25; an older response without the 5m/1h split.
    (
        "claude-opus-4-5",
        {
            "input_tokens": 3_000,
            "cache_creation_input_tokens": 40_000,
            "cache_read_input_tokens": 0,
            "output_tokens": 2_000,
        },
        (3_000 * 5 + 40_000 * 6.25 + 2_000 * 25) / 1e6,  # $0.32
    ),
]

GEMINI = [
    # gemini-2.5-flash: $0.30 input, $0.03 cached, $2.50 output; promptTokenCount includes the cached part,
    # thoughts are billed as output on top of candidatesTokenCount.
    (
        "gemini-2.5-flash",
        {
            "promptTokenCount": 100_000,
            "cachedContentTokenCount": 80_000,
            "candidatesTokenCount": 5_000,
            "thoughtsTokenCount": 15_000,
            "totalTokenCount": 120_000,
        },
        (20_000 * 0.30 + 80_000 * 0.03 + 20_000 * 2.50) / 1e6,  # $0.06
    ),
    # gemini-2.5-pro, prompt ≤ 200k: $1.25 input, $0.125 cached, $10 output.
    (
        "gemini-2.5-pro",
        {
            "promptTokenCount": 150_000,
            "cachedContentTokenCount": 100_000,
            "candidatesTokenCount": 10_000,
            "thoughtsTokenCount": 20_000,
        },
        (50_000 * 1.25 + 100_000 * 0.125 + 30_000 * 10) / 1e6,  # $0.38
    ),
    # gemini-2.5-pro, prompt > 200k: every token at the higher tier, $2.50 / $0.25 / $15.
    (
        "gemini-2.5-pro",
        {
            "promptTokenCount": 300_000,
            "cachedContentTokenCount": 100_000,
            "candidatesTokenCount": 10_000,
            "thoughtsTokenCount": 20_000,
        },
        (200_000 * 2.50 + 100_000 * 0.25 + 30_000 * 15) / 1e6,  # $0.98
    ),
]


def priced(model: str, usage: Usage | None) -> float:
    assert usage is not None
    cost = BASE.cost(model, usage)
    assert cost.known, f"{model} has no price"
    return cost.usd


@pytest.mark.parametrize(("model", "raw", "usd"), OPENAI)
def test_openai_usage_priced_to_the_cent(model: str, raw: dict[str, Any], usd: float) -> None:
    got = priced(model, openai_wire.parse_usage(raw))
    assert round(got, 2) == round(usd, 2) and got == pytest.approx(usd, rel=1e-9)


@pytest.mark.parametrize(("model", "raw", "usd"), ANTHROPIC)
def test_anthropic_usage_with_cache_writes_priced_to_the_cent(
    model: str, raw: dict[str, Any], usd: float
) -> None:
    usage = anthropic.parse_usage(raw)
    assert usage is not None
    assert usage.prompt_tokens == (
        raw["input_tokens"] + raw["cache_creation_input_tokens"] + raw["cache_read_input_tokens"]
    )
    assert usage.cache_write_tokens == raw["cache_creation_input_tokens"]
    got = priced(model, usage)
    assert round(got, 2) == round(usd, 2) and got == pytest.approx(usd, rel=1e-9)


@pytest.mark.parametrize(("model", "raw", "usd"), GEMINI)
def test_gemini_usage_with_thoughts_and_tiers_priced_to_the_cent(
    model: str, raw: dict[str, Any], usd: float
) -> None:
    got = priced(model, gemini.parse_usage(raw))
    assert round(got, 2) == round(usd, 2) and got == pytest.approx(usd, rel=1e-9)


def test_servers_that_report_nothing_give_no_usage_rather_than_zero() -> None:
    # None tells the adapter to count locally; a usage of zeros would let the call pass quotas for free.
    assert openai_wire.parse_usage(None) is None
    assert openai_wire.parse_usage({"prompt_tokens": 0, "completion_tokens": 0}) is None
    assert anthropic.parse_usage({}) is None
    assert gemini.parse_usage({"totalTokenCount": 0}) is None
    # Nonsense counts from a server become 0 instead of failing the run.
    u = openai_wire.parse_usage(
        {"prompt_tokens": "12k", "completion_tokens": 5, "prompt_tokens_details": None}
    )
    assert u is not None and (u.prompt_tokens, u.completion_tokens) == (0, 5)
    # Python's json reads Infinity and NaN: a proxy that sends them must not crash the run.
    u = gemini.parse_usage(
        json.loads('{"promptTokenCount": -Infinity, "candidatesTokenCount": NaN, "thoughtsTokenCount": 3}')
    )
    assert u is not None and (u.prompt_tokens, u.completion_tokens) == (0, 3)


def test_inconsistent_counts_are_clamped_not_raised() -> None:
    # More cached than prompt (a buggy proxy): priced as all cached, never negative and never an exception.
    usd = BASE.cost("gpt-4.1-mini", Usage(prompt_tokens=1000, completion_tokens=0, cached_tokens=5000)).usd
    assert usd == pytest.approx(1000 * 0.10 / 1e6)


def test_unknown_model_is_unknown_never_zero() -> None:
    cost = BASE.cost("my-own-llama-q4", Usage(1000, 100, requests=1))
    assert not cost.known and cost.format().startswith("unknown") and "$0" not in cost.format()
    assert not BASE.estimate("my-own-llama-q4", 1000, 100).known


def test_every_shipped_tier_model_is_priced_by_the_package() -> None:
    tiers = load_tiers(None)
    for specs in tiers.values():
        for spec in specs:
            price = BASE.lookup(split_spec(spec)[1])
            assert price is not None and price.source.startswith("genai-prices"), spec
    # Host-only names resolve at the host serving OPENAI_BASE_URL (Groq's price, not OpenRouter's).
    groq = PriceTable(endpoint="https://api.groq.com/openai/v1")
    assert BASE.lookup("openai/gpt-oss-120b") is None
    assert groq.lookup("openai/gpt-oss-120b").source.endswith("groq/openai/gpt-oss-120b")  # type: ignore[union-attr]


def test_prices_file_adds_and_overrides_models_with_cache_writes_tiers_and_fees(tmp_path: Path) -> None:
    f = tmp_path / "prices.json"
    f.write_text(
        json.dumps(
            {
                "models": {
                    "gpt-5-mini": {
                        "input": 1.0,
                        "output": 4.0,
                        "source": "our contract",
                        "date": "2026-12-01",
                    },
                    "local-qwen": {
                        "input": 0.5,
                        "cached_input": 0.05,
                        "cache_write": 0.75,
                        "output": 1.0,
                        "per_request": 0.001,
                        "tiers": [{"above": 100_000, "input": 1.0, "output": 2.0}],
                        "source": "our GPU bill",
                        "date": "2026-12-01",
                    },
                }
            }
        )
    )
    table = PriceTable().merged(PriceTable.from_json(f.read_text(), "PRICES_FILE"))
    assert table.lookup("gpt-5-mini").source == "our contract"  # type: ignore[union-attr]
    assert table.cost("gpt-5-mini", Usage(1_000_000, 0, requests=1)).usd == pytest.approx(1.0)
    small = Usage(50_000, 10_000, cached_tokens=10_000, requests=2, cache_write_tokens=20_000)
    assert table.cost("local-qwen", small).usd == pytest.approx(
        (20_000 * 0.5 + 10_000 * 0.05 + 20_000 * 0.75 + 10_000 * 1.0) / 1e6 + 2 * 0.001
    )
    big = Usage(200_000, 10_000, requests=1)  # above 100k: the tier's rates for every token
    assert table.cost("local-qwen", big).usd == pytest.approx((200_000 * 1.0 + 10_000 * 2.0) / 1e6 + 0.001)
    # The package still prices what the file does not name.
    assert table.cost("gpt-5", Usage(1_000_000, 0)).usd == pytest.approx(1.25)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("not json", "expected a JSON object with a 'models' mapping"),
        ('{"models": {"x": {"input": 1}}}', "needs numeric 'input' and 'output'"),
        ('{"models": {"x": {"input": -1, "output": 1}}}', "input must be a number ≥ 0"),
        ('{"models": {"x": {"input": 1, "output": 1, "tiers": [{"input": 2}]}}}', "integer 'above'"),
        ('{"models": {"x": {"input": 1, "output": 1, "cache_write_1h": 2}}}', "cache_write_tokens"),
    ],
)
def test_a_bad_prices_file_is_one_clear_line(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match="PRICES_FILE") as e:
        PriceTable.from_json(text, "PRICES_FILE=/etc/p.json")
    assert complaint in str(e.value)


@settings(max_examples=200, deadline=None)
@given(
    spec=st.sampled_from([s for specs in load_tiers(None).values() for s in specs]),
    prompt=st.integers(0, 400_000),
    read=st.floats(0, 1),
    write=st.floats(0, 1),
    completion=st.integers(0, 20_000),
    thinking=st.floats(0, 1),
)
def test_the_reservation_estimate_is_never_below_what_the_call_can_be_billed(
    spec: str, prompt: int, read: float, write: float, completion: int, thinking: float
) -> None:
    # However the provider splits the prompt between uncached, cache reads and 5-minute cache writes (the
    # only kind this library asks for), and however much of the output was thinking, the bill stays
    # within the reservation made from the same prices.
    model = split_spec(spec)[1]
    cached = int(prompt * read)
    written = int((prompt - cached) * write)
    real = Usage(prompt, completion, cached, 1, int(completion * thinking), written)
    estimate = BASE.estimate(model, prompt, completion).usd
    assert estimate >= BASE.cost(model, real).usd - 1e-12
    # ... and it is exactly the dearest of those ways: all uncached, all written, all output thinking.
    ways = (
        Usage(prompt, completion, requests=1),
        Usage(prompt, completion, requests=1, cache_write_tokens=prompt),
        Usage(prompt, completion, requests=1, reasoning_tokens=completion),
    )
    assert estimate == max(BASE.cost(model, u).usd for u in ways)


# (model, when, expected USD) for Usage(300_000 prompt, 10_000 completion, 100_000 cached, 50_000 written):
# the rates in force when the call is made, chosen per call even though they are computed once per period.
DATED = [
    # deepseek-chat by time of day: $0.27 input, $0.07 cached, $1.10 output; half that 16:30-00:30 UTC.
    # It has no cache-write price: written tokens are billed as input.
    (
        "deepseek-chat",
        datetime(2026, 1, 1, 2, 0, tzinfo=UTC),
        (200_000 * 0.27 + 100_000 * 0.07 + 10_000 * 1.1) / 1e6,
    ),
    (
        "deepseek-chat",
        datetime(2026, 1, 1, 20, 0, tzinfo=UTC),
        (200_000 * 0.135 + 100_000 * 0.035 + 10_000 * 0.55) / 1e6,
    ),
    # claude-sonnet-4-6 before 2026-03-13: above 200k prompt tokens $6 / $0.60 read / $7.50 write / $22.50 out.
    (
        "claude-sonnet-4-6",
        datetime(2026, 3, 1, tzinfo=UTC),
        (150_000 * 6 + 100_000 * 0.6 + 50_000 * 7.5 + 10_000 * 22.5) / 1e6,
    ),
    # ... and from that date one rate at any prompt size: $3 / $0.30 / $3.75 / $15.
    (
        "claude-sonnet-4-6",
        datetime(2026, 4, 1, tzinfo=UTC),
        (150_000 * 3 + 100_000 * 0.3 + 50_000 * 3.75 + 10_000 * 15) / 1e6,
    ),
]


@pytest.mark.parametrize(("model", "when", "usd"), DATED)
def test_dated_and_time_of_day_prices_apply_at_the_time_of_the_call(
    model: str, when: datetime, usd: float
) -> None:
    # Alternate the periods on one table, so rates kept from an earlier call cannot price a later one.
    usage = Usage(300_000, 10_000, 100_000, 1, 0, 50_000)
    for m, w, _ in DATED:
        BASE.cost(m, usage, at=w)
    got = BASE.cost(model, usage, at=when).usd
    assert round(got, 2) == round(usd, 2) and got == pytest.approx(usd, rel=1e-9)


@settings(max_examples=300, deadline=None)
@given(
    model=st.sampled_from(
        [
            *sorted({split_spec(s)[1] for specs in load_tiers(None).values() for s in specs}),
            "deepseek-chat",
            "claude-sonnet-4-6",
            "gemini-3-pro-preview",
            "gpt-4o-mini",
        ]
    ),
    prompt=st.integers(0, 400_000),
    read=st.floats(0, 1),
    write=st.floats(0, 1),
    write_1h=st.floats(0, 1),
    completion=st.integers(0, 50_000),
    thinking=st.floats(0, 1),
    when=st.datetimes(datetime(2025, 6, 1), datetime(2027, 6, 1), timezones=st.just(UTC)),
)
def test_rates_computed_once_price_every_call_as_the_package_does(
    model: str,
    prompt: int,
    read: float,
    write: float,
    write_1h: float,
    completion: int,
    thinking: float,
    when: datetime,
) -> None:
    # Our per-model rates against genai-prices' own public calc_price, to the last bit: every tier, date,
    # time of day and mix of cache reads, 5-minute and 1-hour writes and thinking.
    import genai_prices

    cached = int(prompt * read)
    written = int((prompt - cached) * write)
    written_1h = int(written * write_1h)
    reasoning = int(completion * thinking)
    usage = Usage(prompt, completion, cached, 1, reasoning, written, cache_write_1h_tokens=written_1h)
    price = BASE.lookup(model)
    assert price is not None and price.info is not None
    provider = price.source.split(": ", 1)[1].split("/", 1)[0]
    expected = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=prompt,
            cache_read_tokens=cached,
            cache_write_tokens=written,
            cache_write_1h_tokens=written_1h,
            output_tokens=completion,
            output_reasoning_tokens=reasoning,
        ),
        price.info.id,
        provider_id=provider,
        genai_request_timestamp=when,
    )
    assert BASE.cost(model, usage, at=when).usd == float(expected.total_price)


def test_prices_come_from_the_package_without_any_network() -> None:
    # Run in a fresh interpreter whose sockets cannot connect: pricing must not try to fetch anything.
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network used')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse\n"
        "from agent.models.prices import PriceTable\n"
        "from agent.events import Usage\n"
        "t = PriceTable()\n"
        "print(t.cost('claude-haiku-4-5', Usage(1000, 0, requests=1)).usd)\n"
        "from genai_prices import data_snapshot\n"
        "print(data_snapshot.get_snapshot().from_auto_update)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["0.001", "False"]
    # And no code of ours starts the package's updater.
    root = Path(__file__).resolve().parents[1]
    for path in (root / "agent").rglob("*.py"):
        text = path.read_text()
        assert "UpdatePrices(" not in text and "wait_prices_updated" not in text, path
