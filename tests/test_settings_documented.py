"""Every environment variable the code reads is in .env.example, with the code's default."""

from __future__ import annotations

import re

import pytest

from agent.config import AgentSettings
from bot.config import BotSettings
from tests.settings_names import ROOT, read_by_hand, setting_names, tree_fields

EXAMPLE = {
    m.group(1): m.group(2)
    for m in re.finditer(r"^([A-Z][A-Z0-9_]*)=(.*)$", (ROOT / ".env.example").read_text(), re.M)
}


def test_every_setting_the_code_reads_is_documented_and_nothing_else() -> None:
    assert sorted(setting_names() - set(EXAMPLE)) == [], "add these to .env.example"
    assert sorted(set(EXAMPLE) - setting_names()) == [], ".env.example documents settings nobody reads"


def test_settings_are_read_through_the_tree_not_by_hand() -> None:
    # One settings tree: a module reading os.environ itself would dodge bounds, .env and the tests' guard.
    assert read_by_hand() == set()


@pytest.mark.parametrize("key", sorted(tree_fields()))
def test_the_documented_value_is_the_default(key: str) -> None:
    cls = AgentSettings if any(f.alias == key for f in AgentSettings.model_fields.values()) else BotSettings
    documented = cls.model_validate({key: EXAMPLE[key]})
    name = next(n for n, f in cls.model_fields.items() if f.alias == key)
    default = cls.model_fields[name].get_default(call_default_factory=True)
    assert getattr(documented, name) == default, (
        f"{key}={EXAMPLE[key]} in .env.example, the code says {default!r}"
    )
