"""A /research that starts before on_ready is live, not interrupted.

discord.py dispatches interactions as soon as the gateway delivers them, while on_ready waits for
every server (``guild_ready_timeout`` after the last one). The start-up resume then finds the new
run's turn marked running in the store; taking it for one a restart interrupted ran the question a
second time in the same thread (a second answer, "Interrupted by a restart") and filled the thread's
write window, so the real run's first step appeared seconds late (found by bench/bot_load.py).
"""

from __future__ import annotations

from pathlib import Path

from bot.resume import resume_interrupted
from tests.e2e.harness import running_bot, wait_idle
from tests.fakes.discord_server import FakeDiscord, FakeGuild
from tests.fakes.llm_server import FakeLLM, text, tool_call


async def test_resume_at_ready_leaves_a_run_started_before_it_alone(
    fake: FakeDiscord, llm: FakeLLM, guild: FakeGuild, tmp_path: Path
) -> None:
    llm.script(
        tool_call("calculator", {"expression": "6*7"}, delay=0.5),
        text("The answer is **42**.", delay=0.5),
    )
    async with running_bot(fake, llm, tmp_path, guild) as bot:
        general = guild.channel("general")
        fake.inject_interaction("research", {"task": "What is 6*7?"}, user="alice", channel=general)
        thread = await fake.wait_for_thread(parent=general, name=None)
        await fake.wait_for(lambda: llm.requests, within=10, what="the run's first model call")
        # What on_ready does when it comes after the interaction.
        assert await resume_interrupted(bot.runner, bot.fetch_channel) == 0
        await fake.wait_for_message(thread, lambda m: "tokens" in m.content, within=15)
        await wait_idle(fake, bot)
        contents = [m.content for m in fake.messages(thread)]
        assert [c for c in contents if c.startswith("The answer is **42**.")] == ["The answer is **42**."]
        assert len([c for c in contents if "tokens" in c]) == 1
        assert not [c for c in contents if "Interrupted" in c]
        assert len(llm.requests) == 2
