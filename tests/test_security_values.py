"""Bad values (issue 14.11): finite, stated bounds for limits; file names that cannot lie.

``1e300`` USD or tokens was accepted and then broke every turn on that server (OverflowError), and
``1e-7`` USD was stored as 0. Names with bidi overrides, newlines or control characters were written,
listed and attached as they were.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.events import Usage
from agent.messages import ToolCall
from agent.tools.files import FilesSettings, file_tools
from agent.tools.registry import ToolContext, ToolOutcome, ToolRegistry
from agent.tools.safe_names import safe_name
from bot.attach import new_files
from bot.limits import Limits
from bot.store import Database, GuildSettingsStore, QuotaStore, SettingsSchema
from bot.store.settings_schema import SettingError

G, ADMIN, USER = 1, 7, 100
MONEY = "from $0.0001 to $1,000,000"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with await Database.open(tmp_path / "bot.sqlite3") as database:
        yield database


def schema() -> SettingsSchema:
    return SettingsSchema(known_models=["m"], known_tools=["fetch_url"])


@pytest.mark.parametrize(
    ("key", "value", "stated"),
    [
        ("limit.cost_per_month_usd", "1e300", MONEY),
        ("limit.guild_budget_per_month_usd", "1e300", MONEY),
        ("limit.guild_budget_per_month_usd", 1e300, MONEY),
        ("limit.tokens_per_day", "1e300", "from 1 to 1,000,000,000,000"),
        ("limit.requests_per_day", "1e12", "from 1 to 1,000,000"),
        ("limit.concurrent_sessions", "100000", "from 1 to 1,000"),
        ("role_limit.123456789012345678.cost_per_month_usd", "1e300", MONEY),
        ("role_limit.123456789012345678.tokens_per_day", "1e300", "from 1 to 1,000,000,000,000"),
        ("limit.cost_per_month_usd", "1e-7", MONEY),  # was stored as 0
        ("limit.guild_budget_per_month_usd", "0.00001", MONEY),
    ],
)
def test_security_limit_values_outside_finite_bounds_are_refused_with_the_bounds(
    key: str, value: object, stated: str
) -> None:
    with pytest.raises(SettingError) as e:
        schema().validate(key, value)
    assert stated in str(e.value)
    assert key in str(e.value)


def test_security_limit_values_at_the_bounds_are_kept_exactly() -> None:
    s = schema()
    assert s.validate("limit.cost_per_month_usd", "0.0001") == 0.0001
    assert s.validate("limit.guild_budget_per_month_usd", "$1,000,000") == 1_000_000
    assert s.validate("limit.tokens_per_day", "1e12") == 10**12
    assert s.validate("limit.cost_per_month_usd", "unlimited") is None


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("GUILD_BUDGET_PER_MONTH_USD", "1e300"),
        ("QUOTA_COST_PER_MONTH_USD", "1e300"),
        ("QUOTA_COST_PER_MONTH_USD", "1e-7"),
        ("QUOTA_COST_PER_MONTH_USD", "inf"),
        ("QUOTA_TOKENS_PER_DAY", "10000000000000"),
    ],
)
def test_security_env_limit_defaults_are_bounded_and_name_the_variable(var: str, raw: str) -> None:
    with pytest.raises(ValueError) as e:
        Limits.from_env({var: raw})
    assert var in str(e.value) and "from " in str(e.value) and " to " in str(e.value)
    assert "\n" not in str(e.value)  # one line for the operator


async def test_security_huge_budget_cannot_break_a_servers_turns(db: Database) -> None:
    settings = GuildSettingsStore(db, schema())
    store = QuotaStore(db, settings, Limits.unlimited(), clock=lambda: datetime(2025, 3, 10, tzinfo=UTC))
    with pytest.raises(SettingError, match=MONEY.replace("$", r"\$")):
        await settings.set(G, ADMIN, "limit.guild_budget_per_month_usd", "1e300")
    # A value stored before limits had bounds (straight into the table) is ignored, not obeyed.
    await db.write(
        "INSERT INTO guild_settings (guild_id, key, value, updated_at, updated_by) VALUES (?,?,?,?,?)",
        (G, "limit.guild_budget_per_month_usd", json.dumps(1e300), 0, ADMIN),
    )
    await db.write(
        "INSERT INTO guild_settings (guild_id, key, value, updated_at, updated_by) VALUES (?,?,?,?,?)",
        (G, "limit.tokens_per_day", json.dumps(1e300), 0, ADMIN),
    )
    settings._changed(G)
    assert (await store.begin_session(G, USER, (), "s1")).allowed
    budget = store.budget(G, USER, (), "s1")
    token = await budget.reserve("m", Usage(300, 200), 0.01)  # OverflowError here before
    assert token


# ------------------------------------------------------------------------------------------ names


async def run_tool(ws: Path, name: str, **args: object) -> ToolOutcome:
    registry = ToolRegistry(file_tools(FilesSettings()))
    call = ToolCall("c", name, json.dumps(args))
    return await registry.execute(call, ToolContext(session_id="s", workspace=ws))


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("report\u202efdp.exe", "U+202E"),  # right-to-left override: shows as reportexe.pdf
        ("a\u2066b.txt", "U+2066"),  # left-to-right isolate
        ("notes\n- secret.txt", "U+000A"),
        ("x\r.txt", "U+000D"),
        ("bell\x07.txt", "U+0007"),
        ("tab\there.txt", "U+0009"),
        ("line\u2028sep.txt", "U+2028"),
        ("zero\u200bwidth.txt", "U+200B"),
        ("dir\u202e/inner.txt", "U+202E"),
    ],
)
async def test_files_unsafe_names_are_refused_for_writes_and_reads(
    tmp_path: Path, name: str, code: str
) -> None:
    outcome = await run_tool(tmp_path, "write_file", path=name, content="x")
    assert outcome.is_error
    assert code in outcome.output and "must not have" in outcome.output
    assert list(tmp_path.iterdir()) == []  # nothing written
    read = await run_tool(tmp_path, "read_file", path=name)
    assert read.is_error and code in read.output


async def test_files_listing_shows_unsafe_names_escaped(tmp_path: Path) -> None:
    # run_python can create any name; the listing must not pass it on raw.
    (tmp_path / "report\u202efdp.exe").write_text("x")
    (tmp_path / "a\nfake.txt  999 MB").write_text("x")
    outcome = await run_tool(tmp_path, "list_files")
    assert "\u202e" not in outcome.output
    assert "report\\u202efdp.exe" in outcome.output
    assert "a\\nfake.txt  999 MB" in outcome.output
    assert len(outcome.output.splitlines()) == 3  # a header and one line per file, no forged lines


def test_security_attachment_names_are_made_safe(tmp_path: Path) -> None:
    (tmp_path / "report\u202efdp.exe").write_bytes(b"x")
    (tmp_path / "two\nlines.txt").write_bytes(b"y")
    os.makedirs(tmp_path / "d\u2067ir")
    (tmp_path / "d\u2067ir" / "f.txt").write_bytes(b"z")
    names = sorted(n for n, _ in new_files(tmp_path, time.time() - 5))
    assert names == ["d_ir_f.txt", "report_fdp.exe", "two_lines.txt"]
    assert safe_name("\u202e") == "_" and safe_name("") == "file"
