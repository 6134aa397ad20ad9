"""Quota policy without the database: env defaults, role resolution, UTC periods, messages."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.limits import Limits, discord_timestamp, exhausted_message, next_day, next_month, resolve_limits


def test_env_defaults_zero_or_empty_mean_unlimited_and_bad_values_name_the_variable() -> None:
    assert Limits.from_env({}) == Limits(50, 200_000, 5.0, 2, 100.0)
    limits = Limits.from_env(
        {
            "QUOTA_REQUESTS_PER_DAY": "0",
            "QUOTA_TOKENS_PER_DAY": "",
            "QUOTA_COST_PER_MONTH_USD": "2.5",
            "QUOTA_CONCURRENT_SESSIONS": "1",
            "GUILD_BUDGET_PER_MONTH_USD": "1_000",
        }
    )
    assert limits == Limits(None, None, 2.5, 1, 1000.0)
    with pytest.raises(ValueError, match=r"QUOTA_TOKENS_PER_DAY='lots': Input should be a valid integer"):
        Limits.from_env({"QUOTA_TOKENS_PER_DAY": "lots"})
    with pytest.raises(
        ValueError, match=r"QUOTA_COST_PER_MONTH_USD='-1': Input should be greater than or equal to 0"
    ):
        Limits.from_env({"QUOTA_COST_PER_MONTH_USD": "-1"})


def test_several_roles_get_the_most_generous_value_per_limit() -> None:
    defaults = Limits(50, 200_000, 5.0, 2, 100.0)
    server = {"requests_per_day": 20}
    roles = {
        1: {"requests_per_day": 100, "cost_per_month_usd": 2.0},
        2: {"requests_per_day": 30, "cost_per_month_usd": None},  # None = unlimited: beats any number
        3: {"tokens_per_day": 10},  # a restrictive role: replaces the server/default value
    }
    assert resolve_limits(defaults, server, roles, []) == Limits(20, 200_000, 5.0, 2, 100.0)
    assert resolve_limits(defaults, server, roles, [1, 2]) == Limits(100, 200_000, None, 2, 100.0)
    assert resolve_limits(defaults, server, roles, [3, 99]) == Limits(20, 10, 5.0, 2, 100.0)
    assert resolve_limits(defaults, {}, {}, [], guild_budget=None).guild_budget_per_month_usd is None


def test_periods_are_utc_and_roll_over_months_and_years() -> None:
    late = datetime(2025, 12, 31, 23, 59, tzinfo=UTC)
    assert next_day(late) == datetime(2026, 1, 1, tzinfo=UTC)
    assert next_month(late) == datetime(2026, 1, 1, tzinfo=UTC)
    assert next_month(datetime(2025, 1, 31, 12, tzinfo=UTC)) == datetime(2025, 2, 1, tzinfo=UTC)
    assert discord_timestamp(datetime(2026, 1, 1, tzinfo=UTC)) == "<t:1767225600:R>"


def test_exhausted_messages_name_the_limit_and_the_reset() -> None:
    now = datetime(2025, 3, 10, 15, 0, tzinfo=UTC)
    msg = exhausted_message("requests_per_day", 50, 50, now)
    assert "50 of 50 requests today" in msg and "<t:1741651200:R>" in msg
    msg = exhausted_message("cost_per_month_usd", 4.99, 5.0, now, need=0.02)
    assert "it costs about $0.02, and $0.01 of $5.00 is left this month" in msg and "<t:1743465600:R>" in msg
    assert "<t:" not in exhausted_message("concurrent_sessions", 2, 2, now)
