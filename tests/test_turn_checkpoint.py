"""A checkpoint carries a run's usage, cost, models, sources and duration, so a resumed run counts on."""

from __future__ import annotations

import json
import time

from agent.events import Cost, Usage
from agent.loop import RunState
from agent.messages import Message
from bot.checkpoint import message_dicts, state_from
from tests.checkpoints import checkpoint_of


def test_a_resumed_state_carries_the_checkpoints_usage_cost_models_sources_and_duration() -> None:
    st = RunState(task="t", messages=[Message("user", "t")], steps=2)
    st.add_usage("gpt-4o-mini", Usage(1200, 30, 100, 1, 0), Cost(0.002))
    st.add_usage("gpt-5", Usage(800, 70, 0, 1, 50), Cost(0.0, ("gpt-5",)))
    st.add_sources(["https://example.org/a"])
    st.started = time.monotonic() - 42.0  # the run had been going for 42 s when it was checkpointed
    cp = json.loads(json.dumps(checkpoint_of(st)))  # as stored: JSON in SQLite

    resumed = state_from("t", cp).result("completed", "done")
    assert resumed.usage == st.usage and resumed.usage.total_tokens == 2100
    assert resumed.cost.usd == 0.002 and resumed.cost.unknown_models == ("gpt-5",)
    assert resumed.models == ["gpt-4o-mini", "gpt-5"] and resumed.sources == ["https://example.org/a"]
    assert resumed.duration >= 42.0
    assert state_from("t", None).usage.total_tokens == 0


def test_checkpoints_kept_between_steps_show_the_history_as_it_is_now() -> None:
    st = RunState(task="t", messages=[Message("user", "t")], steps=1)
    seen: list[tuple[Message, dict[str, object]]] = []
    assert checkpoint_of(st, seen)["messages"] == [{"role": "user", "content": "t"}]
    st.messages += [Message("assistant", "", tool_call_id=None), Message("tool", "4", tool_call_id="c1")]
    assert checkpoint_of(st, seen)["messages"] == checkpoint_of(st)["messages"]
    st.messages = [Message("user", "other")]  # a new list (a resumed or restarted run): nothing stale
    assert checkpoint_of(st, seen)["messages"] == [{"role": "user", "content": "other"}]


def test_the_history_saved_at_a_turns_end_is_each_message_as_it_is_whether_checkpointed_or_not() -> None:
    st = RunState(task="t", messages=[Message("user", "t"), Message("tool", "4", tool_call_id="c1")], steps=1)
    seen: list[tuple[Message, dict[str, object]]] = []
    checkpoint_of(st, seen)
    answer = Message("assistant", "the answer")  # never checkpointed: the run ended with it
    replaced = Message("user", "t (images dropped)")  # a copy made for the stored history
    saved = message_dicts([st.messages[1], replaced, answer], seen)
    assert saved == [m.to_dict() for m in (st.messages[1], replaced, answer)]
    assert saved[0] is seen[1][1]  # the checkpoint's conversion, not a second one
