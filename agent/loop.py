"""The ReAct loop: ask the model, run the tools it calls (concurrently), feed back, repeat.

``Agent.run`` is an async iterator of plain events so that Discord, the terminal, logs and tests all
watch the same run. Nothing a model or tool does raises out of it: model failures end the run with
an ``ErrorEvent`` and a ``FinalEvent``; tool failures become observations.

Cancellation: cancel the task iterating ``run`` (the Stop button). The generator's ``finally`` cancels
and awaits its tool tasks, so nothing is left running, and :class:`RunState` keeps only whole steps
(an assistant turn is recorded together with all its tool results), so history is never half-written.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from agent.budget import Budget, BudgetExceeded
from agent.events import (
    AgentEvent,
    Cost,
    ErrorEvent,
    FinalEvent,
    ModelSwitched,
    RetryEvent,
    RunResult,
    RunStatus,
    StepStarted,
    TextDelta,
    ToolCallEvent,
    ToolResultEvent,
    Usage,
    UsageEvent,
)
from agent.messages import Message, ToolCall
from agent.models.base import (
    Escalating,
    Model,
    ModelError,
    ModelResponse,
    ModelSettings,
    RetryNotice,
    SwitchNotice,
    TextChunk,
)
from agent.models.prices import PriceTable, default_prices
from agent.models.tokens import completion_cap, estimate_prompt
from agent.reader import Reader, offers_raw
from agent.tools.registry import ToolContext, ToolOutcome, ToolRegistry

log = structlog.get_logger().bind(logger="agent.loop")

DEFAULT_SYSTEM_PROMPT = """You are a careful research agent. Today is {today}.
Work step by step: use the tools when they help, read what they return, and stop calling tools once you can answer.
Cite the sources you used as URLs. If a tool returns an error, fix the call or try another way.
Answer in the language of the question, clearly and concisely, in Markdown."""


@dataclass(slots=True)
class RunState:
    """Everything a run has completed so far; readable after a cancel, written only at step boundaries."""

    task: str
    messages: list[Message] = field(default_factory=list)
    """New messages of this run (starting with the user's task); always a valid conversation."""
    steps: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: Cost = field(default_factory=Cost)
    models: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    last_text: str = ""
    started: float = field(default_factory=time.monotonic)

    def add_usage(self, model: str, usage: Usage, cost: Cost) -> None:
        self.usage = self.usage + usage
        self.cost = self.cost + cost
        if model not in self.models:
            self.models.append(model)

    def add_sources(self, urls: Sequence[str]) -> None:
        for u in urls:
            if u not in self.sources:
                self.sources.append(u)

    def result(self, status: RunStatus, text: str | None = None, error: str | None = None) -> RunResult:
        return RunResult(
            text=self.last_text if text is None else text,
            status=status,
            steps=self.steps,
            usage=self.usage,
            cost=self.cost,
            models=list(self.models),
            sources=list(self.sources),
            messages=list(self.messages),
            duration=time.monotonic() - self.started,
            error=error,
        )


def _parse_args(raw: str) -> dict[str, Any] | None:
    try:
        value = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class Agent:
    """A ReAct agent over one :class:`Model` and a :class:`ToolRegistry`.

    Args:
        model: the model (or a router implementing the same Protocol).
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

    def _system(self, extra: str | None) -> Message:
        text = self.system_prompt.replace("{today}", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"))
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
        """
        ctx = context or ToolContext(session_id=uuid.uuid4().hex[:12])
        st = state or RunState(task=task)
        st.task = task
        user_msg = Message("user", task)
        st.messages = list(resume) if resume else [user_msg]
        st.steps = resume_step if resume else 0
        for m in st.messages:
            if m.role == "assistant" and m.content.strip():
                st.last_text = m.content
        convo: list[Message] = [self._system(extra_system), *history, *st.messages]
        specs = self.tools.specs()
        blog = log.bind(session_id=ctx.session_id)
        invalid_streak = 0
        empty_retries = 0

        for step in range(st.steps + 1, self.max_iterations + 1):
            yield StepStarted(step=step, model=self.model.name)
            t0 = time.monotonic()
            reservation: Any = None
            if budget is not None:
                try:
                    reservation = await self._reserve(
                        budget, self.model.name, convo, specs, self.settings.max_tokens
                    )
                except BudgetExceeded as e:
                    blog.info("budget_stop", step=step, reason=str(e))
                    yield ErrorEvent(step=step, message=str(e), fatal=True)
                    yield FinalEvent(step=step, result=self._partial(st, "budget", str(e)))
                    return
            response: ModelResponse | None = None
            settled = False
            try:
                async with contextlib.aclosing(self.model.stream(convo, specs, self.settings)) as chunks:
                    async for chunk in chunks:
                        if isinstance(chunk, TextChunk):
                            yield TextDelta(step=step, text=chunk.text)
                        elif isinstance(chunk, RetryNotice):
                            blog.warning(
                                "model_retry",
                                step=step,
                                model=self.model.name,
                                attempt=chunk.attempt,
                                delay=round(chunk.delay, 2),
                                error=chunk.error,
                            )
                            yield RetryEvent(
                                step=step,
                                what="model",
                                attempt=chunk.attempt,
                                max_attempts=chunk.max_attempts,
                                delay=chunk.delay,
                                error=chunk.error,
                            )
                        elif isinstance(chunk, SwitchNotice):
                            yield ModelSwitched(
                                step=step,
                                from_model=chunk.from_model,
                                to_model=chunk.to_model,
                                reason=chunk.reason,
                            )
                        elif isinstance(chunk, ModelResponse):
                            response = chunk
            except ModelError as e:
                if budget is not None:
                    settled = True
                    await budget.settle(reservation, self.model.name, self.model.provider, Usage(), Cost())
                blog.error("model_error", step=step, model=self.model.name, status=e.status, error=e.message)
                yield ErrorEvent(step=step, message=e.message, fatal=True)
                yield FinalEvent(step=step, result=self._partial(st, "error", e.message))
                return
            finally:
                if budget is not None and not settled and response is None:
                    # Cancelled mid-call: release the hold; the provider's real charge is unknown to us.
                    with contextlib.suppress(Exception):
                        await budget.settle(
                            reservation, self.model.name, self.model.provider, Usage(), Cost()
                        )
                    settled = True
            if response is None:
                msg = f"{self.model.name} ended its answer without a response"
                yield ErrorEvent(step=step, message=msg, fatal=True)
                yield FinalEvent(step=step, result=self._partial(st, "error", msg))
                return

            served_by = response.model or self.model.name
            cost = self.prices.cost(served_by, response.usage)
            if budget is not None and not settled:
                await budget.settle(reservation, served_by, self.model.provider, response.usage, cost)
            st.add_usage(served_by, response.usage, cost)
            st.steps = step
            latency = time.monotonic() - t0
            blog.info(
                "model_call",
                step=step,
                model=served_by,
                latency=round(latency, 3),
                prompt_tokens=response.usage.prompt_tokens,
                completion_tokens=response.usage.completion_tokens,
                cached_tokens=response.usage.cached_tokens,
                reasoning_tokens=response.usage.reasoning_tokens,
                cost=round(cost.usd, 6) if cost.known else "unknown",
                tool_calls=len(response.message.tool_calls),
            )
            yield UsageEvent(step=step, model=served_by, usage=response.usage, cost=cost)

            assistant = response.message
            if (
                not assistant.tool_calls
                and step < self.max_iterations
                and isinstance(self.model, Escalating)
                and (handed := self.model.hand_over()) is not None
            ):
                # The researcher is done: its reply says only that, and the writer answers from the same
                # conversation (it may still call tools).
                if handed.from_model != handed.to_model:
                    yield ModelSwitched(
                        step=step,
                        from_model=handed.from_model,
                        to_model=handed.to_model,
                        reason=handed.reason,
                    )
                continue
            if assistant.content.strip():
                st.last_text = assistant.content

            if not assistant.tool_calls:
                if not assistant.content.strip():
                    empty_retries += 1
                    switch = self._escalate("it returned an empty answer")
                    if switch is not None:
                        yield ModelSwitched(
                            step=step,
                            from_model=switch.from_model,
                            to_model=switch.to_model,
                            reason=switch.reason,
                        )
                    if empty_retries <= 1 or switch is not None:
                        convo.append(
                            Message("user", "Your last reply was empty. Please give your answer now.")
                        )
                        continue
                    msg = f"{served_by} returned an empty answer twice"
                    yield ErrorEvent(step=step, message=msg, fatal=True)
                    yield FinalEvent(step=step, result=self._partial(st, "error", msg))
                    return
                convo.append(assistant)
                st.messages.append(assistant)
                yield FinalEvent(step=step, result=st.result("completed", assistant.content))
                return

            # Tool calls: announce each, run them concurrently, feed results back in call order.
            calls = assistant.tool_calls
            for call in calls:
                yield ToolCallEvent(
                    step=step,
                    call_id=call.id,
                    name=call.name,
                    arguments=_parse_args(call.arguments),
                    raw_arguments=call.arguments,
                )
            outcomes: list[ToolOutcome | None] = [None] * len(calls)
            tool_run = self._run_tools(step, calls, ctx, outcomes, blog, st, budget)
            async with contextlib.aclosing(tool_run) as tool_events:
                async for ev in tool_events:
                    yield ev
            tool_msgs = [
                Message("tool", o.output if o else "", tool_call_id=c.id, name=c.name)
                for c, o in zip(calls, outcomes, strict=True)
            ]
            convo.append(assistant)
            convo.extend(tool_msgs)
            st.messages.append(assistant)
            st.messages.extend(tool_msgs)
            for o in outcomes:
                if o is not None:
                    st.add_sources(o.sources)

            all_invalid = all(o is not None and o.is_error and o.arguments is None for o in outcomes)
            invalid_streak = invalid_streak + 1 if all_invalid else 0
            switch = None
            if invalid_streak >= 2:
                switch = self._escalate("its tool calls were invalid twice in a row")
                if switch is not None:
                    invalid_streak = 0
            elif isinstance(self.model, Escalating):
                switch = self.model.after_step()
            if switch is not None:
                yield ModelSwitched(
                    step=step, from_model=switch.from_model, to_model=switch.to_model, reason=switch.reason
                )

        n = self.max_iterations
        note = f"Stopped after {n} steps without a final answer."
        blog.info("max_iterations", steps=n)
        yield FinalEvent(step=n, result=self._partial(st, "max_iterations", note))

    def _escalate(self, reason: str) -> SwitchNotice | None:
        if isinstance(self.model, Escalating):
            return self.model.escalate(reason)
        return None

    @staticmethod
    def _partial(st: RunState, status: RunStatus, note: str) -> RunResult:
        """A stopped run's answer: the note, then the best partial answer (last text the model wrote)."""
        text = note
        if st.last_text.strip():
            text = f"{note}\n\nBest partial answer so far:\n\n{st.last_text}"
        return st.result(status, text, error=None if status == "max_iterations" else note)

    async def _run_tools(
        self,
        step: int,
        calls: list[ToolCall],
        ctx: ToolContext,
        outcomes: list[ToolOutcome | None],
        blog: Any,
        st: RunState,
        budget: Budget | None,
    ) -> AsyncIterator[AgentEvent]:
        queue: asyncio.Queue[AgentEvent | tuple[int, ToolOutcome]] = asyncio.Queue()

        def on_retry(name: str, attempt: int, max_attempts: int, delay: float, error: str) -> None:
            blog.warning(
                "tool_retry", step=step, tool=name, attempt=attempt, delay=round(delay, 2), error=error
            )
            queue.put_nowait(
                RetryEvent(
                    step=step, what=name, attempt=attempt, max_attempts=max_attempts, delay=delay, error=error
                )
            )

        async def one(i: int, call: ToolCall) -> None:
            outcome = await self.tools.execute(call, ctx, on_retry)
            if self.reader is not None:
                outcome = await self._read(step, call, outcome, st, budget, queue.put_nowait, blog)
            queue.put_nowait((i, outcome))

        tasks = [asyncio.create_task(one(i, c), name=f"tool:{c.name}") for i, c in enumerate(calls)]
        try:
            remaining = len(tasks)
            while remaining:
                item = await queue.get()
                if isinstance(item, tuple):
                    i, outcome = item
                    outcomes[i] = outcome
                    remaining -= 1
                    call = calls[i]
                    blog.info(
                        "tool_call",
                        step=step,
                        tool=call.name,
                        latency=round(outcome.duration, 3),
                        error=outcome.is_error,
                        truncated=outcome.truncated,
                    )
                    yield ToolResultEvent(
                        step=step,
                        call_id=call.id,
                        name=call.name,
                        output=outcome.output,
                        is_error=outcome.is_error,
                        duration=outcome.duration,
                        truncated=outcome.truncated,
                        sources=list(outcome.sources),
                        read_by=outcome.read_by,
                        source_chars=outcome.source_chars,
                    )
                else:
                    yield item
        finally:
            for t in tasks:
                if not t.done():
                    t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _reserve(
        self,
        budget: Budget,
        model: str,
        messages: Sequence[Message],
        specs: Sequence[dict[str, Any]],
        max_tokens: int | None,
    ) -> Any:
        """Hold the most one call can cost (agent.models.prices.estimate); raises :class:`BudgetExceeded`."""
        est = Usage(estimate_prompt(messages, specs), completion_cap(model, max_tokens), 0, 1, estimated=True)
        est_cost = self.prices.estimate(model, est.prompt_tokens, est.completion_tokens)
        return await budget.reserve(model, est, est_cost.usd if est_cost.known else None)

    async def _read(
        self,
        step: int,
        call: ToolCall,
        outcome: ToolOutcome,
        st: RunState,
        budget: Budget | None,
        emit: Any,
        blog: Any,
    ) -> ToolOutcome:
        """The outcome with the reader's notes in place of its output, or unchanged if not read.

        A reading is a model call like any other: reserved against the budget, charged, counted in the
        run's usage and models. Any failure leaves the tool's own output, so nothing is lost.
        """
        reader = self.reader
        text = outcome.full_text or outcome.output
        if reader is None or not reader.wants(call.name, text, outcome.is_error, outcome.arguments):
            return outcome
        tool = self.tools.get(call.name)
        task = st.task
        reservation: Any = None
        if budget is not None:
            msgs = reader.messages(task, call, text)
            try:
                reservation = await self._reserve(
                    budget, reader.name, msgs, (), reader.model_settings().max_tokens
                )
            except BudgetExceeded:
                return outcome
        notes = None
        usage, cost, served_by = Usage(), Cost(), reader.name
        t0 = time.monotonic()
        try:
            notes = await reader.read(task, call, text, offers_raw=bool(tool and offers_raw(tool.parameters)))
            if notes is not None:
                served_by = notes.response.model or reader.name
                usage = notes.response.usage
                cost = self.prices.cost(served_by, usage)
        except ModelError as e:
            blog.warning("reader_failed", step=step, tool=call.name, model=reader.name, error=e.message)
        finally:
            if budget is not None:
                with contextlib.suppress(Exception):
                    await budget.settle(reservation, served_by, reader.model.provider, usage, cost)
        if notes is None:
            return outcome
        st.add_usage(served_by, usage, cost)
        blog.info(
            "reader_call",
            step=step,
            tool=call.name,
            model=served_by,
            latency=round(time.monotonic() - t0, 3),
            source_chars=notes.source_chars,
            notes_chars=len(notes.observation),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost=round(cost.usd, 6) if cost.known else "unknown",
        )
        emit(UsageEvent(step=step, model=served_by, usage=usage, cost=cost))
        return dataclasses.replace(
            outcome,
            output=notes.observation,
            truncated=False,
            duration=outcome.duration + (time.monotonic() - t0),
            full_text=None,
            read_by=served_by,
            source_chars=notes.source_chars,
        )
