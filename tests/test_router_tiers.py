"""Tier tables (shipped file, ROUTER_TIERS_FILE, server overrides) and building a router from settings."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from agent.config import ConfigError, load_agent_settings
from agent.logs import redact
from agent.models.classifier import HeuristicClassifier, JudgeClassifier
from agent.models.embedding_classifier import EmbeddingClassifier
from agent.models.factory import build_model, build_router, missing_key, split_spec
from agent.models.prices import default_prices
from agent.models.tiers import TIERS, default_tiers, load_tiers, merge_tiers
from tests.fakes.llm_server import FakeLLM, text


def settings(**env: str):
    return load_agent_settings(_env_file=None, OPENAI_API_KEY="sk-test-tiers-0000001", **env)


def test_shipped_tiers_cover_every_tier_and_every_model_has_a_price() -> None:
    table = default_tiers()
    assert list(table) == list(TIERS)
    prices = default_prices()
    for tier, specs in table.items():
        assert len(specs) >= 2, f"{tier} needs a fallback"
        for spec in specs:
            _, name = split_spec(spec)
            assert prices.lookup(name) is not None, f"{spec} has no price"
    # Fallbacks cross providers, so one provider's outage leaves each tier working.
    assert all(len({split_spec(s)[0] for s in specs}) >= 2 for specs in table.values())


def test_a_tiers_file_replaces_only_the_tiers_it_names(tmp_path: Path) -> None:
    f = tmp_path / "tiers.toml"
    f.write_text('[tiers]\ncomplex = ["anthropic:claude-opus-4-5", "gpt-5"]\n')
    table = load_tiers(f)
    assert table["complex"] == ["anthropic:claude-opus-4-5", "gpt-5"]
    assert table["simple"] == default_tiers()["simple"]


async def test_start_up_parses_the_tiers_file_once_and_an_edit_is_seen(
    tmp_path: Path, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent.models.tiers as tiers

    parsed: list[str] = []
    real = tiers._parse_toml
    monkeypatch.setattr(
        tiers, "_parse_toml", lambda text, origin: parsed.append(origin) or real(text, origin)
    )
    f = tmp_path / "tiers.toml"
    f.write_text('[tiers]\ncomplex = ["qwen2.5:32b"]\n')
    # What `agentbot run` does at start-up: check the settings, build the router, read the tier defaults.
    s = settings(AGENT_MODEL="llama3.1", ROUTER_TIERS_FILE=str(f), ROUTER_CLASSIFIER="heuristic")
    router = build_router(s, http)
    table = load_tiers(s.router_tiers_file, s.agent_model)
    assert [o for o in parsed if o.startswith("ROUTER_TIERS_FILE")] == [f"ROUTER_TIERS_FILE={f}"]
    assert router.tiers["complex"] == table["complex"] == ["qwen2.5:32b"]
    table["complex"].append("mutated")  # a caller's copy is its own
    assert load_tiers(f, "llama3.1")["complex"] == ["qwen2.5:32b"]
    f.write_text('[tiers]\ncomplex = ["qwen2.5:72b-instruct"]\n')  # edited on disk: read again
    assert load_tiers(f, "llama3.1")["complex"] == ["qwen2.5:72b-instruct"]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('[tiers]\nhard = ["gpt-5"]\n', "'hard' is not a tier; use one of: simple, medium, complex"),
        ('[tiers]\nsimple = "gpt-5-nano"\n', "tier 'simple' must be a list of model specs"),
        ("[tiers]\nmedium = []\n", "tier 'medium' lists no model"),
        ('[tiers]\nmedium = ["gpt-5-mini", 3]\n', "each model spec must be a non-empty string"),
        ("[tiers\n", "not valid TOML"),
        ('simple = ["x"]\n', "expected a [tiers] table"),
    ],
)
def test_bad_tier_files_say_what_is_wrong(tmp_path: Path, content: str, needle: str) -> None:
    f = tmp_path / "tiers.toml"
    f.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_tiers(f)
    assert needle in str(info.value) and str(f) in str(info.value)


def test_a_missing_tiers_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ROUTER_TIERS_FILE=.*nope\.toml: cannot read it"):
        load_tiers(tmp_path / "nope.toml")


def test_server_overrides_are_validated() -> None:
    base = default_tiers()
    merged = merge_tiers(base, {"Simple": ["llama-3.1-8b-instant", "llama-3.1-8b-instant"]}, "server tiers")
    assert merged["simple"] == ["llama-3.1-8b-instant"] and merged["complex"] == base["complex"]
    with pytest.raises(ConfigError, match="server tiers: key 'expert' is not a tier"):
        merge_tiers(base, {"expert": ["gpt-5"]}, "server tiers")


def test_with_only_agent_model_every_tier_is_that_model(tmp_path: Path) -> None:
    s = settings(AGENT_MODEL="llama3.1", OPENAI_BASE_URL="http://localhost:11434/v1")
    assert load_tiers(s.router_tiers_file, s.agent_model) == {t: ["llama3.1"] for t in TIERS}
    f = tmp_path / "tiers.toml"  # an operator's partial file: the tiers it does not name stay AGENT_MODEL
    f.write_text('[tiers]\ncomplex = ["qwen2.5:32b"]\n')
    table = load_tiers(f, "llama3.1")
    assert table == {"simple": ["llama3.1"], "medium": ["llama3.1"], "complex": ["qwen2.5:32b"]}
    assert load_tiers("hosted", "llama3.1") == default_tiers()  # the shipped multi-provider table


async def test_a_one_model_router_never_switches_or_hands_over(http: httpx.AsyncClient) -> None:
    router = build_router(settings(AGENT_MODEL="llama3.1", ROUTER_CLASSIFIER="heuristic"), http)
    assert router.step_limits == {} and router.research == {}
    for tier in TIERS:
        model = router.at_tier(tier)
        assert (model.name, model.writer) == ("llama3.1", None)  # writer None: no hand-over
    assert router.unconfigured == {}


async def test_router_from_settings_skips_providers_without_a_key(http: httpx.AsyncClient) -> None:
    router = build_router(settings(ROUTER_TIERS_FILE="hosted"), http)
    assert isinstance(router.classifier, EmbeddingClassifier)  # the default
    assert isinstance(
        build_router(settings(ROUTER_TIERS_FILE="hosted", ROUTER_CLASSIFIER="heuristic"), http).classifier,
        HeuristicClassifier,
    )
    model = router.at_tier("complex")  # researches on the medium tier (ROUTER_RESEARCH_TIERS default)
    assert (model.tier, model.name, model.provider, model.writer) == (
        "complex",
        "gpt-5-mini",
        "openai",
        "gpt-5",
    )
    reasons = router.unconfigured
    assert any("ANTHROPIC_API_KEY is not set" in r for r in reasons.values())
    assert any("GEMINI_API_KEY is not set" in r for r in reasons.values())
    routed = await router.route(
        "Research and compare the three biggest cloud providers' GPU prices, with sources."
    )
    assert routed.tier == "complex" and routed.decision and routed.decision.source == "embedding"


async def test_router_settings_and_keys(http: httpx.AsyncClient, tmp_path: Path) -> None:
    key = "sk-ant-api03-settings-test-key-77777"
    f = tmp_path / "t.toml"
    f.write_text('[tiers]\nsimple = ["anthropic:claude-haiku-4-5", "gpt-4.1-nano"]\n')
    router = build_router(
        settings(
            ANTHROPIC_API_KEY=key, ROUTER_TIERS_FILE=str(f), ROUTER_MAX_TIER="Medium", ROUTER_CLASSIFIER="off"
        ),
        http,
    )
    assert router.classifier is None and router.max_tier == "medium"
    model = router.at_tier("complex")
    assert model.tier == "medium"  # capped by ROUTER_MAX_TIER
    assert router.at_tier("simple").name == "claude-haiku-4-5"
    assert redact(f"key={key}") == "key=***"  # registered: never printed in logs
    assert key not in repr(router.model("anthropic:claude-haiku-4-5"))


async def test_judge_classifier_uses_the_cheapest_simple_model(http: httpx.AsyncClient) -> None:
    async with FakeLLM() as llm:
        llm.script(text("complex"))
        router = build_router(
            settings(OPENAI_BASE_URL=llm.base_url, ROUTER_CLASSIFIER="judge", ROUTER_TIERS_FILE="hosted"),
            http,
        )
        assert isinstance(router.classifier, JudgeClassifier)
        decision = await router.classify("hello there")
        assert (decision.tier, decision.source) == ("complex", "judge")
        assert llm.requests[0]["model"] == "gpt-4.1-nano"
        assert decision.usage is not None and decision.usage.requests == 1


def test_bad_router_settings_are_named() -> None:
    with pytest.raises(ConfigError, match="ROUTER_MAX_TIER"):
        settings(ROUTER_MAX_TIER="ultra")
    with pytest.raises(ConfigError, match="ROUTER_CLASSIFIER"):
        settings(ROUTER_CLASSIFIER="magic")


async def test_a_misspelt_provider_prefix_is_named_not_sent_as_a_model_name(http: httpx.AsyncClient) -> None:
    # "antrhopic:claude-sonnet-4" went to OPENAI_BASE_URL as a model name, whose 404 blamed the base URL.
    for spec, meant in (("antrhopic:claude-sonnet-4", "anthropic:"), ("gemni:gemini-2.5-flash", "gemini:")):
        with pytest.raises(ConfigError, match=f"is no provider; did you mean {meant}"):
            build_model(spec, settings(), http)
        assert f"did you mean {meant}" in (missing_key(settings(), spec) or "")
    for tagged in ("llama3.1:8b", "qwen2.5:7b", "gemma:2b", "mistral:latest"):  # Ollama's names pass
        assert build_model(tagged, settings(), http).name == tagged


async def test_a_provider_without_a_key_cannot_be_built(http: httpx.AsyncClient) -> None:
    with pytest.raises(ConfigError, match=r"GEMINI_API_KEY is not set, so model 'gemini:gemini-2\.5-pro'"):
        build_model("gemini:gemini-2.5-pro", settings(), http)
    assert (
        build_model("google:gemini-2.5-pro", settings(GEMINI_API_KEY="AIzaSyAbcdefgh12345"), http).provider
        == "gemini"
    )
