"""What README.md, .env.example and CHANGELOG.md tell a user, held to the code: the library example as
written, the upgrade notes' schema versions, which settings an empty value does not default, the README
sections operators are sent to, and the sandbox's namespaces as doctor says them. Cheap, in-process
checks; the command-line claims live in tests/test_blackbox_readme_*.py."""

from __future__ import annotations

import ast
import contextlib
import io
import re
import textwrap
from pathlib import Path

from bot.store.migrations import MIGRATIONS
from tests.fakes.llm_server import FakeLLM, text, tool_call

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _library_example() -> str:
    section = README.split("## The agent library", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's 'The agent library' section lost its example"
    return match.group(1)


async def test_the_readme_library_example_runs_as_written_importing_only_from_agent(llm: FakeLLM) -> None:
    """README: "Import from `agent` itself: its `__all__` is the stable API". Its example imported
    build_registry from agent.toolset, a submodule, because the package did not export it. The example
    runs here as written; the only change is the base URL, pointing it at the scripted server instead of
    OpenAI's API (the README says a library user passes ``base_url=`` for any other server)."""
    code = _library_example()
    imports = [n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert imports and all(isinstance(n, ast.ImportFrom) and n.module == "agent" for n in imports), code
    import agent

    for node in imports:
        for alias in node.names:
            assert alias.name in agent.__all__, f"README's example imports {alias.name}, not in agent.__all__"
    assert code.count("api_key=KEY") == 1, code
    body = code.replace("api_key=KEY", "api_key=KEY, base_url=BASE")
    scope: dict[str, object] = {}
    exec("async def example(KEY, BASE):\n" + textwrap.indent(body, "    "), scope)
    llm.script(tool_call("calculator", {"expression": "2**32"}), text("Python 3.14.2 is out."))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        await scope["example"]("sk-test", llm.base_url)  # type: ignore[operator]
    printed = out.getvalue()
    assert "ToolResultEvent(" in printed and "output='4294967296'" in printed, printed
    assert printed.rstrip().splitlines()[-1].startswith("FinalEvent("), printed
    assert "text='Python 3.14.2 is out.'" in printed and "status='completed'" in printed, printed


def test_the_changelog_names_every_schema_version_the_migrations_reach() -> None:
    """README: "`CHANGELOG.md` lists the schema version of each release" (what an upgrade does to stored
    data). Schema 7 (turn_steps) shipped without a line: `agentbot doctor` said "schema version 7" and
    the upgrade notes stopped at v6."""
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    listed = {int(v) for v in re.findall(r"^- v(\d+):", changelog, re.M)}
    assert listed == {m.version for m in MIGRATIONS}, sorted(listed)


def test_every_setting_whose_empty_value_is_not_its_default_is_named_where_the_rule_is_stated() -> None:
    """README and .env.example: "an empty value means the default", naming only the quotas as the
    exception. TOOL_RATE_LIMITS=, ROUTER_STEP_LIMITS= and ROUTER_RESEARCH_TIERS= mean none and
    READER_MODEL= means off (kept so by design), so an operator blanking one got no rate limits, no
    escalation, no research tiers or no page reader where the rule promised the defaults."""
    from agent.config import AgentSettings
    from bot.config import BotSettings
    from bot.limits import QuotaEnv

    def field_env(model: type, name: str) -> str:
        return model.model_fields[name].alias or name.upper()

    exceptions = {field_env(AgentSettings, n) for n in AgentSettings.EMPTY}
    exceptions |= {field_env(BotSettings, n) for n in BotSettings.EMPTY if n not in QuotaEnv.EMPTY}
    assert exceptions >= {"TOOL_RATE_LIMITS", "READER_MODEL"}, exceptions
    rule = README.split("an empty value means the default", 1)[1].split(".env.example` also states", 1)[0]
    env_example = (ROOT / ".env.example").read_text(encoding="utf-8")
    header = env_example.split("The environment wins", 1)[0]
    for name in sorted(exceptions):
        assert name in rule, f"README's settings rule does not name {name}: {rule!r}"
        assert name in header, f".env.example's header does not name {name}: {header!r}"


def _readme_sections() -> list[str]:
    """Headings, and the bold or italic words that open a paragraph or bullet: what "README: X" names."""
    heads = re.findall(r"^#+ (.+)$", README, re.M)
    leads = re.findall(r"^(?:\* )?\*\*?([^*\n]+?)\*\*?", README, re.M)
    return heads + leads


def test_every_readme_section_an_operator_is_sent_to_exists() -> None:
    """.env.example, compose.yaml and the messages the commands print send the operator to README
    sections by name; three named none ("Security, fetching pages", "Operations", "Models")."""
    sections = _readme_sections()
    files = [ROOT / ".env.example", ROOT / "compose.yaml", ROOT / "Dockerfile", ROOT / "CHANGELOG.md"]
    files += sorted((ROOT / "agent").rglob("*.py")) + sorted((ROOT / "bot").rglob("*.py"))
    missing = []
    for path in files:
        source = path.read_text(encoding="utf-8")
        refs = re.findall(r'README:? "([^"\n]+)"', source)
        refs += [r for r in re.findall(r"README: ([A-Z][^)\"\n;.]*)", source)]
        for ref in refs:
            for part in ref.split(", "):
                if not any(s.startswith(part.strip()) for s in sections):
                    missing.append(f"{path.relative_to(ROOT)}: {part!r}")
    assert not missing, missing


def test_doctor_names_every_namespace_the_readme_says_each_run_gets() -> None:
    """README (Python sandbox): "each run gets new user, mount, PID, network, IPC, UTS and cgroup
    namespaces" (sandbox_runner unshares all seven). `agentbot doctor` and the start-up log described
    the sandbox as "user, mount, PID, network, IPC and UTS namespaces": the cgroup one went unsaid."""
    from agent.tools.python_exec import probe_sandbox
    from agent.tools.sandbox_run import PythonSettings

    said = re.search(r"each run gets new ([\w,\s]+?) namespaces", README)
    assert said, "README's Python sandbox section no longer lists the namespaces"
    listed = " ".join(said.group(1).split())
    support = probe_sandbox(PythonSettings(timeout=10, cpu_seconds=5, memory_mb=256, max_output_chars=4000))
    assert support.namespaces, support.detail
    assert support.detail.startswith(listed + " namespaces;"), (listed, support.detail)
