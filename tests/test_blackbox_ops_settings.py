"""Settings as operators' tools hand them over: ``docker run --env-file``, compose, hand-written ``.env``."""

from __future__ import annotations

from pathlib import Path

from agent.config import AgentSettings, parse_settings
from bot.config import BotSettings


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
