"""Settings as operators' tools hand them over: ``docker run --env-file``, compose, hand-written ``.env``."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest

import agent.config
from agent.config import AgentSettings, ConfigError, load_agent_settings, parse_settings
from agent.models.prices import PriceTable
from bot.config import BotSettings, load_bot_settings
from tests.settings_names import ROOT


def test_values_quoted_as_in_env_files_reach_agentbot_without_their_quotes(tmp_path: Path) -> None:
    # `docker run --env-file .env` (README's Docker line) passes `AGENT_MODEL="llama3.1"` with its quotes,
    # which python-dotenv and compose strip: the model was asked for as "llama3.1" in quotes (its 404
    # then blamed OPENAI_BASE_URL), a quoted URL was "not a full URL" and a quoted number not a number.
    env = {
        "AGENT_MODEL": '"llama3.1"',
        "OPENAI_BASE_URL": "'http://ollama:11434/v1'",
        "AGENT_MAX_STEPS": '"5"',
        "OPENAI_API_KEY": '"sk-local-0123456789"',
        "DATA_DIR": f'"{tmp_path}"',
    }
    s = parse_settings(AgentSettings, env)
    assert (s.agent_model, s.openai_base_url, s.agent_max_steps) == ("llama3.1", "http://ollama:11434/v1", 5)
    assert s.openai_api_key is not None and s.openai_api_key.get_secret_value() == "sk-local-0123456789"
    assert s.data_dir == str(tmp_path)
    bot = BotSettings.model_validate({"DISCORD_TOKEN": "'abc.def.ghi'", "QUOTA_REQUESTS_PER_DAY": '"7"'})
    assert bot.discord_token is not None and bot.discord_token.get_secret_value() == "abc.def.ghi"
    assert bot.requests_per_day == 7
    # A quote inside a value is the value's own.
    assert parse_settings(AgentSettings, {"FETCH_USER_AGENT": 'bot "x" 1'}).fetch_user_agent == 'bot "x" 1'


def test_a_misspelt_setting_in_env_is_named_with_the_setting_meant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ignored without a word, AGENT_MAX_STEP=3 left runs at 12 steps and QUOTA_COST_PER_MONTH=1 every
    # member at $5 a month; OPENAI_API_BASE (LangChain's name) sent an Ollama set-up to api.openai.com.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(agent.config, "ENV_FILE", ".env")
    env = Path(".env")
    for line, said in [
        (
            "AGENT_MAX_STEP=3",
            "AGENT_MAX_STEP in .env is not a setting (it would be ignored): did you mean AGENT_MAX_STEPS?",
        ),
        ("OPENAI_API_BASE=http://localhost:11434/v1", "did you mean OPENAI_BASE_URL?"),
    ]:
        env.write_text(f"AGENT_MODEL=llama3.1\n{line}\n")
        with pytest.raises(ConfigError, match=re.escape(said)):
            load_agent_settings()
    env.write_text("QUOTA_COST_PER_MONTH=1\n")
    load_agent_settings()  # `ask` has no quotas
    with pytest.raises(ConfigError, match="did you mean QUOTA_COST_PER_MONTH_USD"):
        load_bot_settings()
    # The shipped example, with compose's POSTGRES_PASSWORD and a name in lower case, is all settings.
    example = (ROOT / ".env.example").read_text().replace("# POSTGRES_PASSWORD=", "POSTGRES_PASSWORD=x")
    env.write_text(example + "agent_max_steps=3\nDISCORD_TOKEN_OLD=kept-aside\nOPENAI_API_KEY_BACKUP=k\n")
    assert load_agent_settings().agent_max_steps == 3
    load_bot_settings()  # a setting's name with a suffix is a value kept aside on purpose, not a typo
    # `ask` checks only the agent's names: none of the bot's may look like a misspelt one of them.
    agent_names = {f.alias for f in AgentSettings.model_fields.values()}
    for name in {f.alias for f in BotSettings.model_fields.values()} - agent_names:
        assert not difflib.get_close_matches(str(name), agent_names, cutoff=0.8), name


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ('"cache_read": 0.02', "'cache_read' is no price this file takes"),  # Anthropic's word for it
        ('"per_call": 0.001', "'per_call' is no price"),
        ('"tiers": [{"above": 200000, "input": 0.4, "outptu": 0.9}]', "a tier's 'outptu' is no price"),
    ],
)
def test_a_misspelt_price_in_prices_file_is_named_not_left_unpriced(entry: str, named: str) -> None:
    text = '{"models": {"my-llama": {"input": 0.2, "output": 0.6, ' + entry + "}}}"
    with pytest.raises(ValueError, match=f"PRICES_FILE=p.json: model 'my-llama': {re.escape(named)}"):
        PriceTable.from_json(text, "PRICES_FILE=p.json")
