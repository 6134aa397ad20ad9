"""Terminal mode: run one task with the same engine the bot uses."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import select
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from rich.markup import escape

from agent.config import AgentSettings, ConfigError
from agent.events import FinalEvent, RetryEvent, RunResult, StepStarted, UsageEvent
from agent.loop import Agent
from agent.messages import well_formed
from agent.models.base import ModelSettings
from agent.models.factory import build_model, missing_key, reader_settings
from agent.models.http import make_client, timeouts
from agent.reader import Reader
from agent.run_state import RunState
from agent.terminal import TerminalRenderer, without_controls
from agent.tools.registry import ToolContext
from agent.tools.research import ResearchToolSettings, research_guard
from agent.tools.workspace import workspace_files
from agent.toolset import build_registry, limit_mcp_tools, operator_mcp


async def ask(
    task: str,
    settings: AgentSettings,
    *,
    model: str | None = None,
    max_steps: int | None = None,
    show_text: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> RunResult:
    out = out or sys.stdout
    renderer = TerminalRenderer(err, show_text=show_text)
    if show_text and not settings.agent_stream:  # it showed nothing, and said nothing of why
        renderer.warn("--show-text shows no words while AGENT_STREAM=false asks for whole replies")
    async with make_client(timeouts(settings.model_timeout)) as client:
        m = build_model(model or settings.agent_model, settings, client)
        # One model in terminal mode, so ``auto`` means no reader; a named READER_MODEL is used as is.
        reader = None
        if (spec := settings.reader_model) not in ("auto", "off", ""):
            why = missing_key(settings, spec, "READER_MODEL")  # named: it blamed the tiers, unused here
            if why is not None:
                raise ConfigError(f"READER_MODEL={spec}: {why}, or set READER_MODEL=off")
            reader = Reader(build_model(spec, settings, client), reader_settings(settings))
        mcp = await operator_mcp(settings.mcp_servers_file)
        for name, why in (mcp.problems if mcp else {}).items():
            renderer.warn(f"MCP server {name} is left out: {why}")
        research = ResearchToolSettings.from_settings(settings, settings.data_dir)
        # TOOL_RATE_LIMITS hold here as in the bot: without them one run could make 16 web searches a
        # step on the operator's search key, or run 16 sandboxes at once.
        mcp_tools = mcp.tools() if mcp else []
        tools = build_registry(research=research, guards=[research_guard(research)], extra=mcp_tools)
        limit_mcp_tools(tools, mcp_tools)
        agent = Agent(
            m,
            tools,
            reader=reader,
            max_iterations=max_steps or settings.agent_max_steps,
            settings=ModelSettings(
                temperature=settings.agent_temperature,
                max_tokens=settings.agent_max_tokens,
                stream=settings.agent_stream,
                reasoning_effort=settings.reasoning_effort,
            ),
        )
        # The files and Python tools work in a workspace of this run's own under DATA_DIR (as the bot's
        # sessions do), never the current directory: the sandbox may hand it to another user.
        session = uuid.uuid4().hex[:12]
        workspace = Path(settings.data_dir, "workspaces", f"ask-{session}")
        context = ToolContext(session_id=session, workspace=workspace)
        made = [p for p in workspace.parents[:2] if not p.exists()]  # removed again if left empty
        result: RunResult | None = None
        state, cancelled, calling = RunState(task=task), False, False
        retry_at = 0.0  # while a failed model call waits to be retried, no call is under way
        try:
            async with contextlib.aclosing(agent.run(task, context=context, state=state)) as events:
                async for ev in events:
                    renderer.render(ev)
                    if isinstance(ev, StepStarted | UsageEvent):
                        calling = isinstance(ev, StepStarted)
                    elif isinstance(ev, RetryEvent) and ev.what == "model":
                        retry_at = ev.at + ev.delay
                    if isinstance(ev, FinalEvent):
                        result = ev.result
        except asyncio.CancelledError:  # Ctrl-C: what the calls so far cost is still said, last
            cancelled = True
            raise
        finally:
            if mcp is not None and (result is None or cancelled):  # else once the answer is out
                await mcp.aclose()
            _keep_files(context.workspace, renderer, made)
            if cancelled:
                renderer.summary(state.result("cancelled", ""))
                # A call under way is billed all the same: counted above by estimate (agent.run_state.hold).
                if (calling and time.monotonic() >= retry_at) or (reader is not None and reader.stopped):
                    renderer.console.print("[dim]estimated: the model call in progress when stopped[/]")
    assert result is not None
    if result.status != "error" and result.text:  # an error is said once, on stderr, never as the answer
        text = well_formed(without_controls(result.text), keep_lone=True)
        text, unwritable = _encodable(text if text.endswith("\n") else text + "\n", out)
        encoding = getattr(out, "encoding", None) or "utf-8"
        if unwritable and codecs.lookup(encoding).name == "utf-8":  # only a lone surrogate is left
            renderer.warn(
                f"the answer has {unwritable} broken character(s) from the server, written as \\u escapes"
            )
        elif unwritable:
            renderer.warn(
                f"the answer has {unwritable} character{'s' * (unwritable > 1)} that standard output's "
                f"encoding ({encoding}) cannot carry, written as \\u escapes: for the "
                "text as it is, use a UTF-8 locale (e.g. LANG=C.UTF-8) or PYTHONIOENCODING=utf-8"
            )
        try:
            _write_all(out, text)
        except OSError as e:  # a full disk, a reader gone (`| head`): the run is paid for, so sum it up
            renderer.summary(result)
            if mcp is not None:
                await mcp.aclose()
            with contextlib.suppress(OSError, ValueError):  # what is left unflushed goes nowhere at exit
                os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
            raise AnswerNotWritten(
                f"cannot write the answer to standard output ({e.strerror or e})",
                reader_gone=isinstance(e, BrokenPipeError),
            ) from e
    renderer.summary(result)
    if mcp is not None:  # after the answer: a server slow to stop (`docker run -i`) held it back for
        await mcp.aclose()  # seconds, and a Ctrl-C meanwhile lost it and what it cost
    return result


class AnswerNotWritten(Exception):
    """The run ended but its answer could not be written out (the message says why, in one line).
    ``reader_gone``: the pipe's reader has read all it wanted (`| head -1`), which is no error to say."""

    def __init__(self, message: str, *, reader_gone: bool = False) -> None:
        super().__init__(message)
        self.reader_gone = reader_gone


def _encodable(text: str, out: TextIO) -> tuple[str, int]:
    """``text`` as ``out``'s encoding can carry it, and how many characters it could not: those are
    written as Python escapes (``\\u2713``), never a UnicodeEncodeError traceback that lost the paid-for
    answer (PYTHONIOENCODING=ascii, a Latin-1 locale). The escapes keep every character recoverable."""
    encoding = getattr(out, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
        return text, 0
    except UnicodeEncodeError:
        bad = [c for c in set(text) if not _fits(c, encoding)]
        return text.encode(encoding, "backslashreplace").decode(encoding), sum(map(text.count, bad))


def _fits(char: str, encoding: str) -> bool:
    try:
        char.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


def _write_all(out: TextIO, text: str) -> None:
    """``text`` written out whole. To a non-blocking descriptor (a terminal a crashed program left
    O_NONBLOCK, a parent's pipe) Python's text stream drops what the pipe cannot take at once without a
    word: 64 KB of a 300 KB answer arrived, exit 0. Unbuffered (``PYTHONUNBUFFERED=1``, which agentbot's
    own Docker image sets) it drops the rest of a write the kernel cut short, when the reader left
    (`| head -1`: exit 0, not 141) or a signal came mid-write. So a file's parts are written here, each
    waiting until it can be written; the flag is left as it is, as the descriptor is shared with whoever
    set it."""
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (io.StringIO in tests, a wrapper)
        out.write(text)
        out.flush()
        return
    out.flush()
    left = memoryview(text.encode(getattr(out, "encoding", None) or "utf-8"))
    while left:
        try:
            left = left[os.write(fd, left) :]
        except BlockingIOError:
            select.select([], [fd], [])


def _keep_files(workspace: Path | None, renderer: TerminalRenderer, made: Sequence[Path] = ()) -> None:
    """Say where the files the run wrote are kept; a workspace left without files is removed, and so
    are the folders of ``made`` (the run's own) left empty: with the default DATA_DIR (``./data``) one
    list_files left ``data/workspaces/`` in whatever directory the user asked from."""
    if workspace is None or not workspace.is_dir():
        return
    files = workspace_files(workspace)
    if not files:
        shutil.rmtree(workspace, ignore_errors=True)
        for folder in made:  # deepest first; one another run is using is not empty and stays
            with contextlib.suppress(OSError):
                folder.rmdir()
        return
    renderer.console.print(f"[dim]files ({len(files)}) kept in {escape(str(workspace.resolve()))}[/]")
