"""The tool half of a step: announce the calls, run them concurrently (the page reader reading long
results), turn each into events as it finishes, and feed the results back to the model in call order."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from agent.budget import Budget, BudgetExceeded
from agent.events import AgentEvent, ToolCallEvent, ToolResultEvent, UsageEvent
from agent.messages import Message, ToolCall
from agent.models.base import ModelError, StepOutcome
from agent.models.prices import PriceTable
from agent.reader import Reader, offers_raw
from agent.retry import RetryWait
from agent.run_state import RunState, hold, parse_args, retry_event
from agent.tools.registry import ToolContext, ToolOutcome, ToolRegistry, describe_error

MAX_CALLS_PER_STEP = 16
"""Tool calls one step runs; the rest are answered "not run". A prompt-injected model asked for 200
read_file calls at once: all ran, and their results made the next request over 1 MB (rate limits
cover only a few tools). 16 is far above the handful of parallel calls a research step makes."""
_TOO_MANY = json.dumps(
    {
        "error": f"not run: one step may make at most {MAX_CALLS_PER_STEP} tool calls; make the ones you "
        "still need in the next step"
    }
)

_CUT_CALL = json.dumps(
    {
        "error": "not run: your reply reached its output limit (AGENT_MAX_TOKENS or the server's own) inside "
        "this call's arguments, so they were cut off. Send less in one call, e.g. a long file in parts "
        "with write_file(append=true)"
    }
)
"""For a call whose arguments are not JSON because the reply was cut (``finish_reason`` length): "not
valid JSON (Unterminated string)" made the model send the same long call again, cut again, every step."""


@dataclasses.dataclass(slots=True)
class ToolStep:
    """What running one step's tools needs from the agent and the run."""

    tools: ToolRegistry
    reader: Reader | None
    prices: PriceTable
    ctx: ToolContext
    state: RunState
    budget: Budget | None
    log: Any
    outcome: StepOutcome = dataclasses.field(default_factory=lambda: StepOutcome(0))
    """What the last step's tools did, for the routing hook."""

    async def run(
        self, step: int, assistant: Message, convo: list[Message], cut: bool = False
    ) -> AsyncIterator[AgentEvent]:
        """Announce ``assistant``'s calls, run them concurrently (events come as they happen), then append
        the turn and its results in call order to ``convo`` and the run state, and set :attr:`outcome`.

        Closing the iterator (a cancelled run) cancels and awaits every tool task, so none outlives it,
        and appends nothing: history keeps whole steps only.
        """
        calls, st, blog = assistant.tool_calls, self.state, self.log
        if assistant.content.strip():
            st.last_text = assistant.content
        parsed = [parse_args(call.arguments) for call in calls]  # read once: for the event and the tool
        for call, args in zip(calls, parsed, strict=True):
            yield ToolCallEvent(
                step=step, call_id=call.id, name=call.name, arguments=args, raw_arguments=call.arguments
            )
        outcomes: list[ToolOutcome | None] = [None] * len(calls)
        queue: asyncio.Queue[AgentEvent | tuple[int, ToolOutcome]] = asyncio.Queue()

        def on_retry(call: ToolCall, w: RetryWait) -> None:
            error = describe_error(w.error)
            queue.put_nowait(retry_event(blog, step, call.name, w.attempt, w.max_attempts, w.delay, error))

        async def one(i: int, call: ToolCall) -> None:
            if i >= MAX_CALLS_PER_STEP:
                queue.put_nowait((i, ToolOutcome(_TOO_MANY, is_error=True)))
                return
            if cut and parsed[i] is None:  # ``cut``: the reply stopped at its output limit
                queue.put_nowait((i, ToolOutcome(_CUT_CALL, is_error=True)))
                return
            outcome = await self.tools.execute(call, self.ctx, lambda w: on_retry(call, w), parsed[i])
            if self.reader is not None:
                outcome = await self._read(step, call, outcome, queue.put_nowait)
            queue.put_nowait((i, outcome))

        tasks = [asyncio.create_task(one(i, c), name=f"tool:{c.name}") for i, c in enumerate(calls)]
        try:
            # One turn of the event loop lets every task start, and a tool that needs no I/O is done
            # by then: waiting on the queue at once cost a second turn on every tool step.
            await asyncio.sleep(0)
            remaining = len(tasks)
            while remaining:
                item = await queue.get()
                if not isinstance(item, tuple):
                    yield item
                    continue
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
                    reader_failed=outcome.reader_failed,
                )
        finally:
            # Only tasks still running are cancelled and awaited: gathering finished ones too cost two
            # more turns of the event loop on every tool step (bench/loop_overhead.py).
            running = [t for t in tasks if not t.done()]
            for t in running:
                t.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            for t in tasks:
                if not t.cancelled():
                    t.exception()  # retrieved, as gather did: no "exception was never retrieved" later
        tool_msgs = [
            Message("tool", o.output if o else "", tool_call_id=c.id, name=c.name)
            for c, o in zip(calls, outcomes, strict=True)
        ]
        convo += [assistant, *tool_msgs]
        st.messages += [assistant, *tool_msgs]
        for o in outcomes:
            if o is not None:
                st.add_sources(o.sources)
        invalid = all(o is not None and o.is_error and o.arguments is None for o in outcomes)
        self.outcome = StepOutcome(len(calls), all_invalid=invalid)

    async def _read(
        self, step: int, call: ToolCall, outcome: ToolOutcome, emit: Callable[[AgentEvent], None]
    ) -> ToolOutcome:
        """The outcome with the reader's notes in place of its output, or unchanged if not read.

        A reading is a model call like any other: held against the budget, charged, counted in the
        run's usage and models. Any failure leaves the tool's own output, so nothing is lost.
        """
        reader = self.reader
        text = outcome.full_text or outcome.output
        if reader is None or not reader.wants(call.name, text, outcome.is_error, outcome.arguments):
            return outcome
        tool = self.tools.get(call.name)
        task = self.state.task
        msgs = reader.messages(task, call, text)  # held, or charged if the reading is cut (Stop)
        notes = None
        try:
            max_tokens = reader.model_settings().max_tokens
            held = hold(self.prices, self.budget, reader.model, msgs, 0, max_tokens, self.state)
            async with held as bill:
                notes = await reader.read(
                    task,
                    call,
                    text,
                    offers_raw=bool(tool and offers_raw(tool.parameters)),
                    on_switch=held.moved,
                )
                if notes is not None:
                    r = notes.response
                    bill.charge(self.prices, r.model or reader.name, r.usage, reader.name)
        except BudgetExceeded:
            return outcome
        except ModelError as e:
            self.log.warning("reader_failed", step=step, tool=call.name, model=reader.name, error=e.message)
            return dataclasses.replace(outcome, reader_failed=e.message)  # only logged, ask said nothing
        if notes is None:
            return outcome
        self.state.add_usage(bill.model, bill.usage, bill.cost)
        self.log.info(
            "reader_call",
            step=step,
            tool=call.name,
            source_chars=notes.source_chars,
            notes_chars=len(notes.observation),
            **bill.log_fields(),
        )
        emit(UsageEvent(step=step, model=bill.model, usage=bill.usage, cost=bill.cost))
        if not notes.observation:  # no notes (billed and charged all the same): the page as it came
            return outcome
        return dataclasses.replace(
            outcome,
            output=notes.observation,
            truncated=False,
            duration=outcome.duration + bill.elapsed,
            full_text=None,
            read_by=bill.model,
            source_chars=notes.source_chars,
        )
