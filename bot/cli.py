"""The ``agentbot`` command: ``ask`` (terminal mode), ``run`` (the Discord bot), ``sync``, ``doctor``.

Settings are parsed once here (environment, then ``.env``) and passed down. An operator's mistake ends
in one line on stderr naming the setting and what to do, and a non-zero exit (see ``EXIT_CODES``).
"""

from __future__ import annotations

import signal
import sys

_early_sigterm: list[int] = []
_loading = [True]


def _terminated_while_loading(signum: int, frame: object) -> None:
    """SIGTERM before a command's own handling is in place (the first ~2 s are imports): the default
    action killed the process with -15. It is noted, and acted on where the command can end cleanly
    (an exception raised mid-import was a traceback): ``run`` exits 0 having started nothing, as a
    SIGTERM later in start-up does; the other commands end as Ctrl-C ends them (130)."""
    if _loading[0] or sys.argv[1:2] == ["run"]:
        _early_sigterm.append(signum)
        return
    raise KeyboardInterrupt


# First, before the imports; an ignored one stays so (nohup). SIGHUP too (a terminal closed in the first
# second): README's 130 for it held only once the run had started, and before it the process died with 129.
for _sig in (signal.SIGTERM, signal.SIGHUP):
    if signal.getsignal(_sig) is signal.SIG_DFL:
        signal.signal(_sig, _terminated_while_loading)


def _skip_teardown_collections() -> None:
    """At exit (the last atexit handler: registered before any other), every object left is frozen, so
    the interpreter's teardown no longer walks the ~700 modules' objects in its own collections: that
    walk cost 35-110 ms of CPU per command, measured (`agentbot ask` 567 -> 532 ms, `--help` 274 -> 241,
    `doctor` 1373 -> 1266): a tenth of a short command, ~20 s of the test suite's ~210 launches.
    atexit handlers, thread joins and the flush of stdout/stderr still run; objects still alive at exit
    are not collected, which Python never promised (a collection first cost back all it saved)."""
    import gc

    gc.freeze()


import atexit  # noqa: E402

atexit.register(_skip_teardown_collections)


class _SkipUnusedExtras:
    """While structlog or httpx is being imported, the optional parts of it agentbot never uses are not
    found: structlog's rich traceback and pretty-printer (which bring attrs and pygments; agent.logs draws
    its own redacted rich traceback, and JSON lines use plain text) and httpx's command-line client
    (click, rich, pygments). They cost ~50 ms of CPU at every start, measured (imports of `ask`
    0.385 -> 0.335 s, median of 12): about 10 s of the test suite's ~210 starts. rich itself still loads
    where agentbot uses it (the terminal's progress lines); after these imports the finder says nothing."""

    _WHILE = {"rich": "structlog", "httpx._main": "httpx"}

    @classmethod
    def find_spec(cls, name: str, path: object = None, target: object = None) -> None:
        importing = sys.modules.get(cls._WHILE.get(name, ""))
        if importing is not None and getattr(importing.__spec__, "_initializing", False):
            raise ModuleNotFoundError(f"{name} is not used by agentbot", name=name)


sys.meta_path.insert(0, _SkipUnusedExtras)  # type: ignore[arg-type]

import asyncio  # noqa: E402 - after the handler, which must be in place first
from importlib.metadata import PackageNotFoundError, version  # noqa: E402
from typing import Annotated, Any  # noqa: E402

try:  # Ctrl-C while the command loads (about a second of imports) was a 30-line traceback
    import typer

    from agent.config import AgentSettings, ConfigError, load_agent_settings
    from agent.logs import configure_logging
    from bot.cli_help import (
        CLICK_ERROR,
        EXIT_CODES,
        EXIT_FAILED,
        EXIT_INTERRUPTED,
        EXIT_OK,
        EXIT_READER_GONE,
        EXIT_SETTINGS,
        EXIT_STEP_LIMIT,
        FLAG,
        USAGE_ERROR,
        Command,
        Group,
        agent_settings,
        fail,
        failing,
        usage_line,
    )
    from bot.cli_store import add_store_commands
except KeyboardInterrupt:
    sys.stderr.write("agentbot: interrupted\n")
    raise SystemExit(130) from None

app = typer.Typer(
    cls=Group,
    context_settings={"help_option_names": ["-h", "--help"]},  # `-h` was "No such option"
    add_completion=False,
    no_args_is_help=True,
    help="agentbot: research agents for Discord.",
    epilog=EXIT_CODES,
)


def _show_version(value: bool) -> None:
    if value:
        try:
            typer.echo(f"agentbot {version('agentbot')}")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
            typer.echo("agentbot unknown")
        raise typer.Exit(0)


@app.callback()
def _root(
    _v: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            metavar=FLAG,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """agentbot: research agents for Discord, and in the terminal."""


def _require_key(settings: AgentSettings, model: str | None) -> None:
    """Fail at once, naming the key, rather than letting api.openai.com refuse after retries; the advice
    names where the model came from (``--model``, else ``AGENT_MODEL``)."""
    from agent.models.factory import missing_key

    spec, setting = (model, "--model") if model is not None else (settings.agent_model, "AGENT_MODEL")
    if (problem := missing_key(settings, spec, setting)) is not None:
        fail(problem)


@app.command(cls=Command, epilog=EXIT_CODES)
def ask(
    task: Annotated[str | None, typer.Argument(metavar="TASK", hidden=True, show_default=False)] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", metavar="MODEL", help="Model spec, e.g. gpt-4o-mini. Default: AGENT_MODEL."
        ),
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option(
            "--max-steps",
            metavar="N",
            min=1,
            max=100,
            help="Most model calls for this run (1-100). Default: AGENT_MAX_STEPS, which defaults to 12.",
        ),
    ] = None,
    show_text: Annotated[
        bool, typer.Option("--show-text", metavar=FLAG, help="Stream the model's words while it writes.")
    ] = False,
) -> None:
    """Run one task in the terminal with every built-in tool: the answer on stdout, progress on stderr.

    TASK is what to research or do; `-`, or none with input piped, reads it from standard input (agentbot ask < question.txt). Only the answer goes to standard output, so `$(agentbot ask ...)` captures nothing else.
    """
    from bot.ask_input import TaskError, stoppable, task_text

    with failing(TaskError):
        task = task_text(task)
    if sys.stdout is None:  # `>&-`: said before the run is paid for, not as a traceback after it
        fail("standard output is closed, so the answer has nowhere to go: redirect it, e.g. > answer.md")
    if model is not None and not model.strip():  # `-m "$MODEL"` with MODEL unset
        fail("--model is empty: give a model spec, e.g. -m gpt-4o-mini, or leave it out for AGENT_MODEL")
    if model is not None and model.startswith("="):  # `-m=x`: a short option's value is all that follows it
        fail(f"-m{model} names the model {model!r}: write -m {model[1:]} or --model{model}")
    settings = agent_settings()
    _require_key(settings, model)
    # The progress lines on stderr already show every retry, switch and error; log lines would say each
    # twice, so logs appear only with LOG_LEVEL=DEBUG.
    configure_logging("DEBUG" if settings.log_level == "DEBUG" else "CRITICAL", settings.log_format)
    from agent.ask import AnswerNotWritten
    from agent.ask import ask as run_ask

    try:
        result = asyncio.run(
            stoppable(run_ask(task, settings, model=model, max_steps=max_steps, show_text=show_text))
        )
    except ConfigError as e:
        fail(str(e))
    except AnswerNotWritten as e:
        if e.reader_gone:  # quietly, as Unix tools do: `| head` has what it wanted
            raise typer.Exit(EXIT_READER_GONE) from None
        fail(str(e), EXIT_FAILED)
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise KeyboardInterrupt from None  # said by main, as before a run
    if result.status == "max_iterations":
        raise typer.Exit(EXIT_STEP_LIMIT)
    if result.status != "completed":
        raise typer.Exit(EXIT_FAILED)


def _bot_settings() -> tuple[AgentSettings, object, str]:
    from agent.tools.research import ResearchToolSettings
    from bot.config import check_shard_memory, load_bot_settings
    from bot.services import check_model_configured

    with failing(ConfigError):
        agent_settings = load_agent_settings()
        bot_settings = load_bot_settings()
        check_shard_memory(bot_settings, agent_settings.chroma_host)
        check_model_configured(agent_settings)
        # Combinations (SEARCH_BACKEND=searxng without SEARXNG_URL) are named before Discord is contacted.
        ResearchToolSettings.from_settings(agent_settings, agent_settings.data_dir)
    if bot_settings.discord_token is None or not bot_settings.discord_token.get_secret_value().strip():
        import agent.config
        from agent.env_file import hidden_by_environment

        if (why := hidden_by_environment("DISCORD_TOKEN", agent.config.ENV_FILE)) is not None:
            fail(why)
        fail(
            "DISCORD_TOKEN is not set: create an application and bot at "
            "https://discord.com/developers/applications, copy the bot token into .env (see .env.example)"
        )
    token = bot_settings.discord_token.get_secret_value().strip()
    from agent.logs import register_secret

    register_secret(token)
    configure_logging(agent_settings.log_level, agent_settings.log_format)
    return agent_settings, bot_settings, token


def _stop(bot: Any, sig: signal.Signals) -> None:
    """SIGTERM, SIGINT or SIGHUP (a closed terminal): the bot pauses its runs and closes (it logs
    "shutdown_started" with the signal). A second one while it waits for running turns ends that wait:
    Ctrl-C twice sat out BOT_SHUTDOWN_GRACE_SECONDS (20 s) without a word. The turns pause where they
    are (their checkpoints hold the steps done), as when the grace runs out, and resume at the next start."""
    stopping, runner = getattr(bot, "_stopping", None), getattr(bot, "runner", None)
    if stopping is not None and not stopping.done() and runner is not None:
        import structlog

        structlog.get_logger("bot.cli").info("shutdown_now", reason=f"{sig.name} received again")
        bot._stopping_now = asyncio.create_task(runner.shutdown(0), name=f"stop-now-on-{sig.name}")
        return
    bot.stop_reason = f"{sig.name} received"
    bot._stopping = asyncio.create_task(bot.close(), name=f"stop-on-{sig.name}")


async def _run_bot(agent_settings: object, bot_settings: object, token: str) -> None:

    from bot.app import AgentBot

    bot = AgentBot(agent_settings, bot_settings)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        try:
            loop.add_signal_handler(sig, _stop, bot, sig)
        except NotImplementedError:  # pragma: no cover - not on Linux
            pass
    if _early_sigterm:  # it came while the command loaded: nothing has started, so nothing to stop
        return
    async with bot:
        await bot.start(token)
    if lost := getattr(bot, "lost_shards", None):  # another process took its shards (README: Scaling)
        from bot.store import StoreError

        raise StoreError(lost)


def _discord_errors(run: object) -> None:
    """Run ``run()`` and turn what Discord (or the way to it) answers into one line naming the setting."""
    from bot.discord_errors import explain

    try:
        run()  # type: ignore[operator]
    except Exception as e:
        said = explain(e)
        if said is None:
            raise
        fail(said[0], EXIT_FAILED if said[1] else EXIT_SETTINGS)


@app.command(cls=Command)
def run() -> None:
    """Start the Discord bot (reads .env). SIGTERM finishes running steps, then exits 0."""
    agent_settings, bot_settings, token = _bot_settings()
    _discord_errors(lambda: asyncio.run(_run_bot(agent_settings, bot_settings, token)))


@app.command(cls=Command)
def sync(
    guild: Annotated[
        int | None, typer.Option("--guild", metavar="SERVER_ID", help="Sync to this server only.")
    ] = None,
) -> None:
    """Force a slash-command sync (normally it happens at start-up, only when the commands changed)."""
    agent_settings, bot_settings, token = _bot_settings()

    async def go() -> bool:
        from bot.app import AgentBot

        bot = AgentBot(agent_settings, bot_settings, sync=False, serve=False)  # type: ignore[arg-type]
        async with bot:
            await bot.login(token)
            return await bot.sync_commands(force=True, guild_id=guild)

    _discord_errors(lambda: asyncio.run(go()))
    typer.echo(f"synced slash commands {'to server ' + str(guild) if guild else 'globally'}")


@app.command(cls=Command)
def doctor() -> None:
    """Check settings, the Discord token, database, memory, each provider and the sandbox.

    Each provider is also asked whether it serves every model the tiers name. Exits 1 when something needs fixing.
    """
    from bot.doctor import render, run_doctor

    # The report says each problem once; log lines (one per model a key is missing for) said them
    # again, on stdout, before it.
    configure_logging("CRITICAL")
    checks = asyncio.run(run_doctor())
    typer.echo(render(checks))
    failed = [c for c in checks if not c.ok]
    typer.echo(f"{len(checks) - len(failed)} ok, {len(failed)} to fix")
    if failed:
        raise typer.Exit(EXIT_FAILED)


add_store_commands(app)


def main() -> None:
    _loading[0] = False
    if _early_sigterm and sys.argv[1:2] != ["run"]:
        typer.echo("agentbot: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    try:
        code = app(standalone_mode=False)
    except USAGE_ERROR as e:
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:  # bare `agentbot`: the help
            typer.echo(ctx.get_help())
        else:  # a wrong option or argument is one line, like a wrong setting
            typer.echo(f"agentbot: {usage_line(e, sys.argv)}", err=True)
        sys.exit(EXIT_SETTINGS)
    except CLICK_ERROR as e:
        e.show()  # type: ignore[attr-defined]
        sys.exit(e.exit_code)  # type: ignore[attr-defined]
    except (KeyboardInterrupt, typer.Abort):
        code = EXIT_INTERRUPTED
    except Exception:
        import structlog

        if not structlog.is_configured():
            raise
        # A bug, once logging is set up: one log line (JSON off a terminal, the traceback as text,
        # secrets redacted), not typer's 170-line box of unredacted text in the middle of the JSON log.
        structlog.get_logger("bot.cli").critical("crashed", exc_info=True)
        sys.exit(EXIT_FAILED)
    if code == EXIT_INTERRUPTED:  # typer's answer to Ctrl-C in any command (`ask` reading stdin): said
        typer.echo("agentbot: interrupted", err=True)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


if __name__ == "__main__":
    main()
