"""Members and admins using files, edits, MCP tools, memory import and thread manners as README says,
where the sixth black-box QA pass of the bot looked: the real discord.py bot on the fake Discord, the
scripted model on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

import bot.guild_mcp
from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_edits import edit_message
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, Reply, text, tool_call
from tests.fakes.mcp_server import HttpMcpServer
from tests.test_e2e_attachments import CSV, user_text
from tests.test_e2e_config import flat, run
from tests.test_security_memory import research


@pytest.fixture
def guild() -> FakeGuild:
    return FakeGuild.create("Lab", channels=("general",), members=("alice", "bob"), admins=("admin",))


@pytest.mark.usefixtures("fast_write_window")
async def test_several_files_in_a_reply_and_one_just_over_the_limit_are_told_apart(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Alice attaches a JSON, a YAML, a script and a CSV a little over the 10 KB per-file limit: the
    refusal read "it is 10 KB, over the 10 KB left for this message" (the same number twice, and a
    message limit she was not over)."""
    llm.script(text("Read them."), text("Got three."))
    big = b"a,b\n" + b"1,2\n" * 2600  # 10,404 bytes: 10.2 KB
    files = [
        ("cfg.json", b'{"a": 1}'),
        ("ci.yaml", b"on: push\n"),
        ("run.py", b"print(1)\n"),
        ("big.csv", big),
    ]
    async with running_bot(fake, llm, tmp_path, guild, ATTACHMENT_MAX_MB=10 / 1024) as agentbot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "files"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: m.content == "Read them.", within=15)
        await wait_idle(fake, agentbot)
        fake.inject_message(thread, "alice", "These", attachments=files)
        await fake.wait_for_message(thread, lambda m: m.content == "Got three.", within=15)
        await wait_idle(fake, agentbot)
    (refused,) = [m.content for m in fake.messages(thread) if "📎 Not read" in m.content]
    told = user_text(llm.requests[1])
    assert all(f"{n} (" in told for n in ("cfg.json", "ci.yaml", "run.py")), told
    assert "big.csv: it is 10.2 KB, over the 10 KB limit per file" in refused, refused


@pytest.fixture
def other() -> FakeGuild:
    return FakeGuild.create("Other", channels=("general",), members=("dave",), admins=("boss",))


@pytest.fixture
def guilds(guild: FakeGuild, other: FakeGuild) -> list[FakeGuild]:
    return [guild, other]


@pytest.mark.usefixtures("fast_write_window")
async def test_a_servers_mcp_server_down_on_its_first_turn_is_used_once_it_is_up(
    fake: FakeDiscord,
    llm: FakeLLM,
    guild: FakeGuild,
    other: FakeGuild,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An admin adds the lab's inventory server with `/config mcp` before it is deployed: the first
    run says it is left out. Once it is up, every later run went on without its tools, saying
    nothing, until the bot restarted or the admin removed and added it again."""
    monkeypatch.setattr(bot.guild_mcp, "RETRY_EVERY", 0.0)  # 30 s in production
    llm.script(text("No inventory."), tool_call("inv__lookup", {"code": "R-2"}), text("R-2: shelf B4."))
    llm.script(text("Other server."))
    server = HttpMcpServer()  # its port, not listening yet
    async with running_bot(fake, llm, tmp_path, guild, agent_env={"FETCH_ALLOW_LOOPBACK": True}) as agentbot:
        await run(fake, guild, "config mcp", {"name": "inv", "url": server.url})
        first = [m.content for m in fake.messages(await research(fake, guild, "Where is R-2?", "alice"))]
        await wait_idle(fake, agentbot)
        with server:
            second = [m.content for m in fake.messages(await research(fake, guild, "And R-2?", "bob"))]
            await wait_idle(fake, agentbot)
            elsewhere = [m.content for m in fake.messages(await research(fake, other, "R-2?", "dave"))]
            await wait_idle(fake, agentbot)
    offered = [{t["function"]["name"] for t in r.get("tools", [])} for r in llm.requests]
    assert sum("MCP server `inv` is left out" in c for c in first) == 1, first
    assert "inv__lookup" in offered[1] and any("shelf B4" in c for c in second), second
    assert not any("left out" in c for c in second + elsewhere) and "inv__lookup" not in offered[-1]


@pytest.mark.usefixtures("fast_write_window")
async def test_a_file_stays_with_its_mention_when_it_is_edited_while_running(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Alice fixes a typo in a mention carrying a CSV while its turn runs: the restarted turn has the
    edit and the file (saved again beside the first copy, as README says). The model was told the
    26-byte file was "0 KB": an empty file, for all it knew."""
    llm.script(Reply(hang=True), text("Jan: 12."))
    async with running_bot(fake, llm, tmp_path, guild) as agentbot:
        general = guild.channel("general")
        mention = f"<@{agentbot.user.id}> "
        asked = fake.inject_message(general, "alice", mention + "Units in Jna?", attachments=[("a.csv", CSV)])
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for(lambda: llm.requests, what="the first model call")
        edit_message(fake, asked, mention + "Units in Jan?")
        await fake.wait_for_message(thread, lambda m: m.content == "Jan: 12.", within=15)
        await wait_idle(fake, agentbot)
    first, restarted = user_text(llm.requests[0]), user_text(llm.requests[1])
    assert "a.csv (26 bytes, text)" in first and "0 KB" not in first + restarted, first
    assert restarted.startswith("Units in Jan?") and "a (2).csv (26 bytes, text)" in restarted, restarted


@pytest.mark.usefixtures("fast_write_window")
async def test_a_file_sent_where_the_admins_turned_read_file_off_is_not_promised_to_the_agent(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """An admin turned `read_file` off with `/config tools`; alice attaches a CSV to /research. The
    agent was told "a.csv: read it with read_file", called it, and the thread showed the step failing
    with "unknown tool 'read_file'"."""
    llm.script(text("I cannot open it here."))
    async with running_bot(fake, llm, tmp_path, guild) as agentbot:
        await run(fake, guild, "config tools", {"tool": "read_file", "enabled": False})
        shown = await research(fake, guild, "Sum it", "alice", file=("a.csv", CSV))
        await wait_idle(fake, agentbot)
    told = user_text(llm.requests[0])
    assert "read_file" not in {t["function"]["name"] for t in llm.requests[0]["tools"]}
    assert "a.csv (26 bytes, text): saved, but read_file is not among your tools" in told, told
    assert not any("unknown tool" in m.content for m in fake.messages(shown))


@pytest.mark.usefixtures("fast_write_window")
async def test_an_admin_switches_off_one_tool_of_the_servers_own_mcp_server(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """The inventory server the admin added offers a `broken` tool they want gone: `/config tools
    tool:inv__broken enabled:false` answered "Unknown tool 'inv__broken'", so the only way to drop one
    tool was to drop the whole server (issue 17: per-server on/off switches as for built-in tools)."""
    llm.script(text("Shelf B4."))
    with HttpMcpServer() as server:
        async with running_bot(
            fake, llm, tmp_path, guild, agent_env={"FETCH_ALLOW_LOOPBACK": True}
        ) as agentbot:
            await run(fake, guild, "config mcp", {"name": "inv", "url": server.url})
            off = flat(await run(fake, guild, "config tools", {"tool": "inv__broken", "enabled": False}))
            typo = flat(await run(fake, guild, "config tools", {"tool": "inv__lokup", "enabled": False}))
            show = flat(await run(fake, guild, "config show"))
            await research(fake, guild, "Where is R-2?", "alice")
            await wait_idle(fake, agentbot)
    offered = {t["function"]["name"] for t in llm.requests[0]["tools"]}
    assert "`tool.inv__broken`: on → off" in off, off
    assert "Unknown tool 'inv__lokup'" in typo and "inv__lookup" in typo, typo
    assert "inv__lookup" in offered and "inv__broken" not in offered, offered
    assert "Off: `inv__broken`" in show, show  # /config show lists what the admin switched off


async def test_an_answer_replaced_by_a_re_run_leaves_the_servers_memory(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    """Alice asked about "Frnace", fixed the typo and pressed "Re-run with the edit". The thread marks
    the first answer superseded, but it stayed in the server's memory: `/memory list` showed "I know no
    country called Frnace." beside the real answer, and later runs recalled it."""
    llm.script(text("I know no country called Frnace."), text("Paris is the capital of France."))
    async with running_bot(fake, llm, tmp_path, guild, MEMORY_ENABLED=True) as agentbot:
        general = guild.channel("general")
        mention = f"<@{agentbot.user.id}> "
        asked = fake.inject_message(general, "alice", mention + "What is the capital of Frnace?")
        thread = await fake.wait_for_thread(parent=general)
        await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=15)
        await wait_idle(fake, agentbot)
        edit_message(fake, asked, mention + "What is the capital of France?")
        offer = await fake.wait_for_message(thread, lambda m: m.content.startswith("✏️ You edited"), within=15)
        fake.inject_component(offer.components[0]["components"][0]["custom_id"], message=offer, user="alice")
        await fake.wait_for_message(thread, lambda m: m.content.startswith("Paris"), within=15)
        await wait_idle(fake, agentbot)
        listed = flat(await run(fake, guild, "memory list", user="bob"))
    assert "Paris is the capital of France." in listed and "Frnace" not in listed, listed
    assert "I know no country called Frnace." in [m.content for m in fake.messages(thread)]  # still shown


async def test_an_import_says_which_memories_stay_unverified_and_another_server_recalls_them(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, other: FakeGuild, tmp_path: Path
) -> None:
    """The Other server's admin imports Lab's export: one answer built from a web page, one member's
    note. The reply said every memory was "marked `import`", while `/memory list` then showed the
    research still marked as built from web content (on purpose: it is recalled as unverified)."""
    llm.script(text("Feed it daily."))
    async with running_bot(fake, llm, tmp_path, guild, MEMORY_ENABLED=True) as agentbot:
        memory, lab = agentbot.services.memory, str(guild.id)
        assert memory is not None, agentbot.services.memory_error
        await memory.store(
            lab,
            "A sourdough starter wants flour and water daily.",
            kind="research",
            sources=["https://bread.example/starter"],
            origin="auto-web",
            task="starter",
        )
        await memory.store(lab, "Our club bakes on Saturdays.", kind="note", origin="agent")
        export = (await run(fake, guild, "memory export")).attachments[0]
        done = flat(
            await run(fake, other, "memory import", {"file": (export.filename, export.data)}, user="boss")
        )
        shown = [
            m.content
            for m in fake.messages(await research(fake, other, "How to feed a sourdough starter?", "dave"))
        ]
        await wait_idle(fake, agentbot)
    assert "**2 new memories**" in done, done
    assert "marked `import` (1 built from web pages or tool output keep that mark instead" in done, done
    assert any("recalled 1 memory" in c for c in shown), shown
    system = llm.requests[0]["messages"][0]["content"]
    assert "sourdough starter wants flour" in system and "unverified" in system, system
