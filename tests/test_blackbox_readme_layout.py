"""README's Layout table is a new contributor's map: every module of ``agent/`` and ``bot/`` is named in
it, and everything it names exists (``bot/store/permissions.py`` was deleted while README still led there)."""

from __future__ import annotations

import re

from tests.settings_names import ROOT

README = (ROOT / "README.md").read_text()
LAYOUT = README[README.index("## Layout") : README.index("\n## ", README.index("## Layout") + 1)]
MODULES = sorted(
    p.relative_to(ROOT).as_posix()
    for room in ("agent", "bot")
    for p in (ROOT / room).rglob("*.py")
    if p.name != "__init__.py" and "__pycache__" not in p.parts
)


def test_every_module_is_in_the_layout_table() -> None:
    missing = [m for m in MODULES if m not in LAYOUT and f"`{m.rsplit('/', 1)[-1]}`" not in LAYOUT]
    assert missing == [], "name these in README's Layout table"


def test_everything_the_layout_table_names_exists() -> None:
    named_paths = set(re.findall(r"`((?:agent|bot|tests|bench)/[\w/.]*)`", LAYOUT))
    gone = sorted(p for p in named_paths if not (ROOT / p).exists())
    files = {p.name for room in ("agent", "bot") for p in (ROOT / room).rglob("*") if p.is_file()}
    named_files = set(re.findall(r"`(\w+\.(?:py|toml))`", LAYOUT)) - {"pyproject.toml"}
    assert gone + sorted(named_files - files) == [], "README's Layout table names what no longer exists"
