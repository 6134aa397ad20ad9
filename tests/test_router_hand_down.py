"""Hand-down (ROUTER_HAND_DOWN_CALLS): an ask the classifier sent to the complex tier without being sure,
whose researcher is done quickly, is answered by the researcher; a run that researched longer, an ask the
classifier was sure of, one that escalated into the complex tier or one the user asked complex for is
answered by the complex model. Real loop, real HTTP to the scripted OpenAI-compatible server, and the
real embedding classifier (MiniLM) with weights whose odds the test sets.
"""

from __future__ import annotations

import numpy as np
import pytest

from agent import ToolRegistry
from agent.config import AgentSettings
from agent.embeddings.minilm import MiniLMEmbedding
from agent.events import ModelSwitched, RouteDecision
from agent.loop import Agent
from agent.models.classifier import HeuristicClassifier
from agent.models.embedding_classifier import EmbeddingClassifier, LinearRouter
from agent.models.factory import build_router
from agent.models.router import Router
from agent.tools.builtin import builtin_tools
from bot.progress import ProgressRenderer
from bot.streamer import ThreadStreamer
from tests.fakes.llm_server import FakeLLM, Reply, text, tool_call
from tests.test_pacing_fair import GatedSink
from tests.test_router_escalation import TIERS, builder, collect

SPLIT = {"complex": "medium"}
COMPLEX_ASK = "Compare the trade-offs of Postgres and MySQL replication in depth, with sources"


def odds(complex_p: float) -> EmbeddingClassifier:
    """The shipped classifier's code over weights that give every ask these complex odds."""
    rest = (1 - complex_p) / 2
    bias = np.log(np.array([rest, rest, complex_p], dtype=np.float32))
    weights = np.zeros((384, 3), dtype=np.float32)
    return EmbeddingClassifier(
        MiniLMEmbedding(), LinearRouter(weights, bias, 0.3, MiniLMEmbedding().id, sure_at=0.45)
    )


def by_model(llm: FakeLLM) -> list[str]:
    return [r["model"] for r in llm.requests]


def calculator(n: int):
    return tool_call("calculator", {"expression": f"{n}*{n}"})


async def test_a_doubtful_complex_ask_researched_in_few_calls_is_answered_by_the_researcher(
    llm: FakeLLM, http
) -> None:
    llm.script(
        calculator(6),
        Reply(text="DONE-LINE: I have what is needed.", completion_tokens=9),
        text("36, written by the researcher"),
    )
    router = Router(TIERS, builder(llm, http), research=SPLIT, hand_down=2, classifier=odds(0.40))
    model = await router.route(COMPLEX_ASK)
    assert (model.tier, model.name, model.writer) == ("complex", "gpt-5-mini", "gpt-5")
    assert model.decision is not None and model.decision.doubtful
    events = await collect(Agent(model, ToolRegistry(builtin_tools())), COMPLEX_ASK)

    # No call on gpt-5: the researcher is asked again, no longer told that someone else writes.
    assert by_model(llm) == ["gpt-5-mini"] * 3
    assert "stronger model will write" in llm.requests[1]["messages"][0]["content"]
    answering = llm.requests[2]["messages"]
    assert "stronger model" not in answering[0]["content"]
    assert "DONE-LINE" not in str(answering) and answering[-1]["role"] == "tool"
    result = events[-1].result
    assert result.status == "completed" and result.text == "36, written by the researcher"
    assert result.models == ["gpt-5-mini"]
    # Where the run ended is typed data: the medium tier, its model, no writer to come.
    assert model.route == RouteDecision(
        "medium", "gpt-5-mini", None, model.route.reasons, "embedding", None, None
    )
    # The thread was told gpt-5 would write: the hand-down is announced, with how to get the complex tier.
    (switch,) = [e for e in events if isinstance(e, ModelSwitched)]
    assert (switch.from_model, switch.to_model, switch.kind) == ("gpt-5-mini", "gpt-5-mini", "hand_over")
    assert "in 2 calls" in switch.reason and "complex tier" in switch.reason
    # In the thread: one line naming who answers and why, not "switched from gpt-5-mini to gpt-5-mini".
    sink = GatedSink()
    sink.gate.set()
    streamer = ThreadStreamer(sink, name="t")
    renderer = ProgressRenderer(streamer, attach=False)
    for event in events:
        renderer.feed(event)
    await streamer.close(within=10)
    shown = "\n".join(sink.sent + sink.edits)
    assert "🧭 gpt-5-mini finished its research in 2 calls, so it writes the answer itself" in shown
    assert "switched from" not in shown


async def test_research_longer_than_the_hand_down_goes_to_the_complex_writer(llm: FakeLLM, http) -> None:
    llm.script(calculator(1), calculator(2), text("done"), text("1 and 4, written by gpt-5"))
    router = Router(TIERS, builder(llm, http), research=SPLIT, hand_down=2, classifier=odds(0.40))
    model = await router.route(COMPLEX_ASK)
    events = await collect(Agent(model, ToolRegistry(builtin_tools())))
    assert by_model(llm) == ["gpt-5-mini"] * 3 + ["gpt-5"]
    assert events[-1].result.text == "1 and 4, written by gpt-5" and model.tier == "complex"


@pytest.mark.parametrize(
    ("complex_p", "hand_down"), [(0.40, 0), (0.60, 6)], ids=["hand-down off", "classifier sure"]
)
async def test_off_or_when_the_classifier_was_sure_the_complex_model_writes_even_after_one_call(
    llm: FakeLLM, http, complex_p: float, hand_down: int
) -> None:
    llm.script(text("done"), text("written by gpt-5"))
    router = Router(
        TIERS, builder(llm, http), research=SPLIT, hand_down=hand_down, classifier=odds(complex_p)
    )
    model = await router.route(COMPLEX_ASK)
    assert model.decision is not None and model.decision.doubtful == (complex_p < 0.45)
    events = await collect(Agent(model, ToolRegistry(builtin_tools())))
    assert by_model(llm) == ["gpt-5-mini", "gpt-5"] and events[-1].result.text == "written by gpt-5"


async def test_a_complex_tier_the_user_asked_for_is_written_by_the_complex_model(llm: FakeLLM, http) -> None:
    llm.script(calculator(3), text("done"), text("9, written by gpt-5"))
    router = Router(TIERS, builder(llm, http), research=SPLIT, hand_down=6, classifier=odds(0.10))
    model = await router.route("what is three squared", requested="complex")
    assert model.decision is not None and not model.decision.doubtful
    events = await collect(Agent(model, ToolRegistry(builtin_tools())))
    assert by_model(llm) == ["gpt-5-mini", "gpt-5-mini", "gpt-5"]
    assert events[-1].result.text == "9, written by gpt-5"


async def test_a_medium_run_that_escalated_is_answered_by_the_complex_model(llm: FakeLLM, http) -> None:
    """Hand-down only undoes a routing guess: a run that earned its writer by working keeps it."""
    llm.script(*(calculator(n) for n in range(1, 4)), text("that is all"), text("1, 4, 9 by gpt-5"))
    router = Router(TIERS, builder(llm, http), step_limits={"medium": 3}, research=SPLIT, hand_down=10)
    model = router.at_tier("medium")
    events = await collect(Agent(model, ToolRegistry(builtin_tools())))
    assert by_model(llm) == ["gpt-5-mini"] * 4 + ["gpt-5"]
    assert events[-1].result.text == "1, 4, 9 by gpt-5" and model.tier == "complex"


async def test_a_medium_ask_routed_medium_is_answered_by_medium(llm: FakeLLM, http) -> None:
    llm.script(calculator(5), text("25, from gpt-5-mini"))
    router = Router(TIERS, builder(llm, http), research=SPLIT, hand_down=2, classifier=HeuristicClassifier())
    model = await router.route("explain how to fix this error in my script")
    assert model.tier == "medium" and model.writer is None
    events = await collect(Agent(model, ToolRegistry(builtin_tools())))
    assert by_model(llm) == ["gpt-5-mini", "gpt-5-mini"] and events[-1].result.text == "25, from gpt-5-mini"


async def test_the_setting_reaches_the_router_and_bad_values_name_the_key(http) -> None:
    tiers = {"simple": ["gpt-5-nano"], "medium": ["gpt-5-mini"], "complex": ["gpt-5"]}
    settings = AgentSettings(
        OPENAI_API_KEY="sk-test-0000", ROUTER_CLASSIFIER="off", ROUTER_HAND_DOWN_CALLS="4"
    )
    router = build_router(settings, http, tiers=tiers)
    assert router.hand_down == 4 and router.with_tiers(None).hand_down == 4
    assert AgentSettings(OPENAI_API_KEY="sk-test-0000").router_hand_down_calls == 0
    with pytest.raises(ValueError, match="ROUTER_HAND_DOWN_CALLS"):
        AgentSettings(ROUTER_HAND_DOWN_CALLS="-1")
