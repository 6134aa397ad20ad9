"""The ReAct loop: ask the model, run the tools it calls (concurrently), feed back, repeat.

``Agent.run`` is an async iterator of plain events so that Discord, the terminal, logs and tests all
watch the same run. Nothing a model or tool does raises out of it: model failures end the run with
an ``ErrorEvent`` and a ``FinalEvent``; tool failures become observations.

One step is: the model call (``_call_model``: budget held and settled in one place, ``run_state.hold``),
then either its tools (``tool_step.ToolStep``: announced, run concurrently, each long result read by
the page reader, fed back) or its answer (``_answered``). Both end at the routing hook (``_route``): a routing
model is told what the step did (:class:`StepOutcome`) and answers with the switch it made, which the
loop passes on as a typed ``ModelSwitched`` event. ``run`` itself only decides whether to go on.

Cancellation: cancel the task iterating ``run`` (the Stop button). The generator's ``finally`` cancels
and awaits its tool tasks, so nothing is left running, and :class:`RunState` keeps only whole steps
(an assistant turn is recorded together with all its tool results), so history is never half-written.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import structlog

from agent.budget import Budget, BudgetExceeded
from agent.events import (
    AgentEvent,
    ErrorEvent,
    FinalEvent,
    ModelSwitched,
    RouteDecided,
    RunResult,
    RunStatus,
    StepStarted,
    TextDelta,
    UsageEvent,
)
from agent.messages import ImagePart, Message
from agent.models.base import (
    Model,
    ModelError,
    ModelResponse,
    ModelSettings,
    RetryNotice,
    Routing,
    StepOutcome,
    SwitchNotice,
    TextChunk,
    ThinkingChunk,
)
from agent.models.bounds import answer_chars, bounded
from agent.models.prices import PriceTable, default_prices
from agent.models.tokens import cut_prompt, tool_chars
from agent.reader import Reader
from agent.run_state import RunState, hold, retry_event
from agent.tool_step import ToolStep
from agent.tools.registry import ToolContext, ToolRegistry

__all__ = ["DEFAULT_SYSTEM_PROMPT", "Agent", "RunState"]  # RunState lives in agent.run_state

# A lazy proxy, bound only inside a run: logging configured after ``import agent`` still applies.
log = structlog.get_logger()

DEFAULT_SYSTEM_PROMPT = """You are a careful research agent. Today is {today}.
Work step by step: use the tools when they help, read what they return, and stop calling tools once you can answer.
Cite the sources you used as URLs. If a tool returns an error, fix the call or try another way.
Answer in the language of the question, clearly and concisely, in Markdown."""


@dataclass(slots=True)
class _Run:
    """One run's working set: what every step reads and appends to."""

    state: RunState
    convo: list[Message]
    specs: list[dict[str, Any]]
    tools: ToolStep
    spec_chars: int = 0
    """The specs' characters for budget holds and cut calls' estimates, counted once per run."""
    empty_replies: int = 0
    end: RunResult | None = None
    said_cut: bool = False
    """The server was seen cutting the prompt (said once a run: it goes on doing so)."""

    @property
    def budget(self) -> Budget | None:
        return self.tools.budget

    @property
    def log(self) -> Any:
        return self.tools.log


class Agent:
    """A ReAct agent over one :class:`Model` and a :class:`ToolRegistry`.

    Args:
        model: the model (or a router implementing the same Protocol and :class:`Routing`).
        tools: the tools offered to the model.
        max_iterations: hard cap on model calls per run; the run then stops with its best partial answer.
        system_prompt: replaces the default prompt; ``{today}`` is filled in.
        settings: temperature, max tokens, streaming.
        prices: price table for cost accounting.
        reader: a cheap model that reads long tool results for the agent model (:mod:`agent.reader`).
    """

    def __init__(
        self,
        model: Model,
        tools: ToolRegistry | None = None,
        *,
        max_iterations: int = 12,
        system_prompt: str | None = None,
        settings: ModelSettings | None = None,
        prices: PriceTable | None = None,
        reader: Reader | None = None,
    ) -> None:
        if max_iterations < 1:
            raise ValueError("max_iterations must be at least 1")
        self.model = model
        self.tools = tools or ToolRegistry()
        self.max_iterations = max_iterations
        self.system_prompt = system_prompt or DEFAULT_SYSTEM_PROMPT
        self.settings = settings or ModelSettings()
        self.prices = prices or default_prices()
        self.reader = reader
        self._routing = model if isinstance(model, Routing) else None

    def _system(self, extra: str | None) -> Message:
        # The machine's own zone, named: in a terminal it is the user's (a Tokyo morning read as UTC was
        # yesterday to the model); a bot's host or container is UTC unless its operator set TZ.
        now = dt.datetime.now().astimezone()
        text = self.system_prompt.replace("{today}", f"{now:%Y-%m-%d} ({now:%Z})")
        if extra:
            text += "\n\n" + extra
        return Message("system", text)

    async def ask(self, task: str, history: Sequence[Message] = (), **kwargs: Any) -> RunResult:
        """Run to the end and return the result (events are discarded)."""
        result: RunResult | None = None
        async with contextlib.aclosing(self.run(task, history, **kwargs)) as events:
            async for ev in events:
                if isinstance(ev, FinalEvent):
                    result = ev.result
        assert result is not None  # run always ends with a FinalEvent unless cancelled
        return result

    async def run(
        self,
        task: str,
        history: Sequence[Message] = (),
        *,
        context: ToolContext | None = None,
        budget: Budget | None = None,
        extra_system: str | None = None,
        state: RunState | None = None,
        resume: Sequence[Message] | None = None,
        resume_step: int = 0,
        images: Sequence[ImagePart] = (),
    ) -> AsyncIterator[AgentEvent]:
        """Yield events until a :class:`FinalEvent`.

        Args:
            task: the user's request for this turn.
            history: earlier turns of the session (without a system message).
            context: passed to tools (namespace = guild, workspace, services).
            budget: reserves and settles each model call; a refusal ends the run with status ``budget``.
            extra_system: appended to the system prompt (server persona, recalled memories).
            state: pass your own to read progress after cancelling the run.
            resume: the whole steps a checkpoint kept of this run (starting with the task's user message):
                the run continues after them instead of starting over, so no finished step is redone
                or charged again.
            resume_step: how many steps those were (the iteration cap counts them).
            images: images attached to ``task``, sent with its user message; pass them only when the
                model accepts images (:func:`agent.models.vision.accepts_images`).
        """
        ctx = context or ToolContext(session_id=uuid.uuid4().hex[:12])
        st = state or RunState(task=task)
        st.start(task, resume, resume_step, images)
        blog = log.bind(logger="agent.loop", session_id=ctx.session_id)
        convo = [self._system(extra_system), *history, *st.messages]
        tools = ToolStep(self.tools, self.reader, self.prices, ctx, st, budget, blog)
        specs = self.tools.specs()
        run = _Run(st, convo, specs, tools, tool_chars(specs))
        if self._routing is not None:
            yield RouteDecided(step=0, route=self._routing.route)
        for step in range(st.steps + 1, self.max_iterations + 1):
            yield StepStarted(step=step, model=self.model.name)
            reply = _Reply()
            # Streamed text goes from the model call straight to the caller: one generator layer each.
            # (try/finally rather than contextlib.aclosing: the same closing, without its two
            # coroutines per use on every step.)
            events = self._call_model(run, step, reply)
            try:
                async for ev in events:
                    yield ev
            finally:
                await events.aclose()
            if reply.error is None and reply.message.tool_calls:
                # The tools' events come straight from ToolStep (announced, run, fed back), then route.
                cut = reply.response is not None and reply.response.finish_reason == "length"
                events = run.tools.run(step, reply.message, run.convo, cut)
                try:
                    async for ev in events:
                        yield ev
                finally:
                    await events.aclose()
                last = step + 1 == self.max_iterations  # then the writer, if any, takes the last step
                if (switch := self._route(replace(run.tools.outcome, next_is_last=last))) is not None:
                    yield self._switched(step, switch)
            else:
                for ev in self._answered(run, step, reply):
                    yield ev
            if run.end is not None:
                yield FinalEvent(step=step, result=run.end)
                return
        n = self.max_iterations
        note = (
            f"Stopped after {n} step{'s' * (n > 1)} without a final answer."  # `--max-steps 1`: not "1 steps"
        )
        run.log.info("max_iterations", steps=self.max_iterations)
        yield FinalEvent(step=self.max_iterations, result=st.partial("max_iterations", note))

    def _answered(self, run: _Run, step: int, reply: _Reply) -> Iterator[AgentEvent]:
        """A step without tool calls: the answer (``run.end``), a hand-over, a retry of an empty answer,
        or the error that stopped the call."""
        st = run.state
        if reply.error is not None:
            yield ErrorEvent(step=step, message=reply.error, quoted=reply.quoted)
            run.end = st.partial(reply.status, reply.error, at=step)
            return
        assistant = reply.message
        empty = not assistant.content.strip()
        switch = self._route(StepOutcome(0, empty=empty, can_continue=step < self.max_iterations))
        if switch is not None and switch.kind == "hand_over":
            # The researcher is done: its reply says only that, and the writer answers from the same
            # conversation (it may still call tools). A hand-down (same model) is shown too: the thread
            # was told a stronger model would write.
            yield self._switched(step, switch)
            return
        if not empty:
            st.last_text = assistant.content
            run.convo.append(assistant)
            st.messages.append(assistant)
            answer = assistant.content
            finish = reply.response.finish_reason if reply.response is not None else None
            if finish in CUT_NOTES:
                answer += f"\n\n{CUT_NOTES[finish]}"  # a cut answer is not passed off as a whole one
            run.end = st.result("completed", answer)
            return
        finish = reply.response.finish_reason if reply.response is not None else None
        if switch is None and finish in EMPTY_BECAUSE:  # asking again would pay for the same nothing
            msg = f"{reply.served_by} wrote no answer: {EMPTY_BECAUSE[finish]}"
            yield ErrorEvent(step=step, message=msg)
            run.end = st.partial("error", msg, at=step)
            return
        if switch is not None:
            yield self._switched(step, switch)
        run.empty_replies += 1
        if run.empty_replies <= 1 or switch is not None:
            run.convo.append(Message("user", "Your last reply was empty. Please give your answer now."))
            return
        msg = f"{reply.served_by} returned an empty answer twice"
        yield ErrorEvent(step=step, message=msg)
        run.end = st.partial("error", msg, at=step)

    async def _call_model(self, run: _Run, step: int, reply: _Reply) -> AsyncIterator[AgentEvent]:
        """Stream one model call into events and ``reply``; the budget holds and settles it in one place."""
        model = self.model
        try:
            held = hold(
                self.prices, run.budget, model, run.convo, run.spec_chars, self.settings.max_tokens, run.state
            )
            async with held as bill:
                chunks = model.stream(run.convo, run.specs, self.settings)
                try:
                    async for chunk in chunks:
                        if isinstance(chunk, ModelResponse):
                            reply.response = chunk = bounded(
                                chunk, answer_chars(model.name, self.settings.max_tokens)
                            )
                            bill.charge(self.prices, chunk.model or model.name, chunk.usage, model.name)
                        else:
                            held.saw(chunk)  # a call cut under way is charged what it streamed
                            if isinstance(chunk, ThinkingChunk):  # billed, never shown
                                continue
                            if isinstance(chunk, TextChunk) and not chunk.text:
                                continue  # written, not shown (yet): counted above, nothing to show
                            yield self._chunk_event(run, step, chunk)
                            if isinstance(chunk, SwitchNotice):  # the next request goes to another model
                                await held.moved()
                finally:
                    await chunks.aclose()  # type: ignore[attr-defined]
        except BudgetExceeded as e:
            run.log.info("budget_stop", step=step, reason=str(e))
            reply.error, reply.status = str(e), "budget"
            return
        except ModelError as e:
            run.log.error("model_error", step=step, model=model.name, status=e.status, error=e.message)
            reply.error, reply.quoted = e.message, e.quoted
            return
        if reply.response is None:
            reply.error = f"{model.name} ended its answer without a response"
            return
        reply.served_by = bill.model
        run.state.steps = step
        run.state.add_usage(bill.model, bill.usage, bill.cost)
        tool_calls = len(reply.response.message.tool_calls)
        run.log.info("model_call", step=step, tool_calls=tool_calls, **bill.log_fields())
        warning = None if run.said_cut else cut_prompt(bill.model, bill.usage, run.convo, run.spec_chars)
        if warning:
            run.said_cut = True
            run.log.warning("prompt_truncated", step=step, model=bill.model, warning=warning)
        for name, usage, cost in held.lost_charged:  # attempts that broke off first: said, as charged
            yield UsageEvent(step=step, model=name, usage=usage, cost=cost)
        yield UsageEvent(step=step, model=bill.model, usage=bill.usage, cost=bill.cost, warning=warning)

    def _chunk_event(self, run: _Run, step: int, chunk: Any) -> AgentEvent:
        if isinstance(chunk, TextChunk):
            return TextDelta(step=step, text=chunk.text)
        if isinstance(chunk, RetryNotice):
            c = chunk
            return retry_event(run.log, step, "model", c.attempt, c.max_attempts, c.delay, c.error)
        assert isinstance(chunk, SwitchNotice)
        return self._switched(step, chunk)

    def _route(self, outcome: StepOutcome) -> SwitchNotice | None:
        """The routing hook: a routing model hears what the step did and answers with its switch."""
        return self._routing.after_step(outcome) if self._routing is not None else None

    @staticmethod
    def _switched(step: int, n: SwitchNotice) -> ModelSwitched:
        return ModelSwitched(
            step=step,
            from_model=n.from_model,
            to_model=n.to_model,
            reason=n.reason,
            kind=n.kind,
            route=n.route,
        )


CUT_NOTE = (
    "*(Cut off here: the model reached its output limit, AGENT_MAX_TOKENS or the server's own; "
    "ask it to continue.)*"
)

CUT_NOTES = {
    "length": CUT_NOTE,
    # Azure OpenAI's filter, Gemini's SAFETY/RECITATION, Claude's "refusal" stop an answer part-way: the
    # words so far came out as the whole answer, exit 0, with nothing to say the rest was withheld.
    "content_filter": "*(Cut off here: the provider's content filter stopped the answer; rephrase the request.)*",
}

EMPTY_BECAUSE = {
    "length": "it spent its whole output limit (thinking, most likely); raise AGENT_MAX_TOKENS",
    "content_filter": "its provider's content filter blocked it; rephrase the request",
    # vLLM's parser finding a call it cannot read: asked again, "returned an empty answer twice"
    "tool_calls": "it stopped to call a tool, but its server sent no call it could read: on vLLM, start it with the "
    "--tool-call-parser for this model (hermes for Qwen, llama3_json for Llama 3.x); on llama.cpp, --jinja",
}


@dataclass(slots=True)
class _Reply:
    """What one model call left: its response, or why the run has to stop."""

    response: ModelResponse | None = None
    served_by: str = ""
    error: str | None = None
    quoted: tuple[str, ...] = ()
    status: RunStatus = "error"

    @property
    def message(self) -> Message:
        assert self.response is not None
        return self.response.message
