"""The ``agentbot`` command: ``ask`` (terminal mode), ``run`` (the Discord bot), ``sync``, ``doctor``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agent.config import ConfigError, load_agent_settings
from agent.logs import configure_logging

if TYPE_CHECKING:
    from bot.backup import MemoryLocation

app = typer.Typer(add_completion=False, no_args_is_help=True, help="agentbot: research agents for Discord.")


@app.callback()
def _root() -> None:
    """agentbot: research agents for Discord, and in the terminal."""


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"agentbot: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def ask(
    task: Annotated[str, typer.Argument(help="What to research or do.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model spec, e.g. gpt-4o-mini.")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, max=100)] = None,
    show_text: Annotated[
        bool, typer.Option("--show-text", help="Stream the model's words while it writes.")
    ] = False,
) -> None:
    """Run one task in the terminal with every built-in tool; the answer goes to stdout."""
    try:
        settings = load_agent_settings()
    except ConfigError as e:
        _fail(str(e))
        return
    configure_logging(settings.log_level if settings.log_level != "INFO" else "WARNING", settings.log_format)
    from agent.ask import ask as run_ask

    try:
        result = asyncio.run(run_ask(task, settings, model=model, max_steps=max_steps, show_text=show_text))
    except ConfigError as e:
        _fail(str(e))
        return
    except KeyboardInterrupt:
        _fail("interrupted", 130)
        return
    if result.status == "error":
        raise typer.Exit(1)


def _bot_settings() -> tuple[object, object, str]:
    from bot.config import load_bot_settings
    from bot.services import check_model_configured

    try:
        agent_settings = load_agent_settings()
        bot_settings = load_bot_settings()
        check_model_configured(agent_settings)
    except ConfigError as e:
        _fail(str(e))
        raise
    if bot_settings.discord_token is None or not bot_settings.discord_token.get_secret_value().strip():
        _fail(
            "DISCORD_TOKEN is not set: create an application and bot at "
            "https://discord.com/developers/applications, copy the bot token into .env (see .env.example)"
        )
    token = bot_settings.discord_token.get_secret_value().strip()  # type: ignore[union-attr]
    from agent.logs import register_secret

    register_secret(token)
    configure_logging(agent_settings.log_level, agent_settings.log_format)
    return agent_settings, bot_settings, token


async def _run_bot(agent_settings: object, bot_settings: object, token: str) -> None:
    import signal

    import discord
    import yarl

    from bot.app import AgentBot

    if bot_settings.api_base_url:  # type: ignore[attr-defined]
        discord.http.Route.BASE = bot_settings.api_base_url.rstrip("/")  # type: ignore[attr-defined]
    if bot_settings.gateway_url:  # type: ignore[attr-defined]
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(bot_settings.gateway_url)  # type: ignore[attr-defined]
    bot = AgentBot(agent_settings, bot_settings)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(bot.close()))
        except NotImplementedError:  # pragma: no cover - not on Linux
            pass
    async with bot:
        await bot.start(token)


@app.command()
def run() -> None:
    """Start the Discord bot (reads .env). SIGTERM finishes running steps, then exits 0."""
    import aiohttp
    import discord

    agent_settings, bot_settings, token = _bot_settings()
    try:
        asyncio.run(_run_bot(agent_settings, bot_settings, token))
    except ConfigError as e:  # found while building services (tiers file, judge or reader model)
        _fail(str(e))
    except discord.LoginFailure:
        _fail(
            "Discord rejected DISCORD_TOKEN (401 Unauthorized): reset the bot token in the developer portal "
            "and put the new one in .env",
            1,
        )
    except (OSError, aiohttp.ClientError) as e:  # DNS, refused connection, TLS: Discord is unreachable
        _fail(
            f"could not reach Discord ({type(e).__name__}: {e}): check the network, or DISCORD_API_BASE_URL",
            1,
        )
    except discord.PrivilegedIntentsRequired:
        _fail(
            "Discord refused the Message Content intent: enable it for this bot under Bot > Privileged "
            "Gateway Intents in the developer portal",
            1,
        )


@app.command()
def sync(
    guild: Annotated[int | None, typer.Option("--guild", help="Sync to this server only.")] = None,
) -> None:
    """Force a slash-command sync (normally it happens at start-up, only when the commands changed)."""
    import discord

    agent_settings, bot_settings, token = _bot_settings()

    async def go() -> bool:
        from bot.app import AgentBot

        bot = AgentBot(agent_settings, bot_settings, sync=False)  # type: ignore[arg-type]
        async with bot:
            await bot.login(token)
            return await bot.sync_commands(force=True, guild_id=guild)

    try:
        asyncio.run(go())
    except discord.LoginFailure:
        _fail("Discord rejected DISCORD_TOKEN (401 Unauthorized)", 1)
    typer.echo(f"synced slash commands {'to server ' + str(guild) if guild else 'globally'}")


@app.command()
def doctor() -> None:
    """Check settings, Discord token, database, memory, each configured provider and the sandbox."""
    from bot.doctor import render, run_doctor

    checks = asyncio.run(run_doctor())
    typer.echo(render(checks))
    failed = [c for c in checks if not c.ok]
    typer.echo(f"{len(checks) - len(failed)} ok, {len(failed)} to fix")
    if failed:
        raise typer.Exit(1)


def _store_locations() -> tuple[Path, MemoryLocation | None]:
    from agent.memory.chroma_store import ChromaMemory
    from bot.backup import MemoryLocation
    from bot.config import load_bot_settings

    try:
        data_dir = Path(load_agent_settings().data_dir)
        if not load_bot_settings().memory_enabled:
            return data_dir, None
        mem = ChromaMemory.from_env(data_dir / "memory")
    except (ConfigError, ValueError) as e:
        _fail(str(e))
        raise
    return data_dir, MemoryLocation(mem.path, mem.host, mem.port, mem.ssl, dict(mem._headers), mem.prefix)


@app.command()
def backup(
    dest: Annotated[Path, typer.Argument(help="A new (or empty) directory for the copy.")],
) -> None:
    """Copy the database and the memory store into DEST; safe while the bot runs (README: Backups)."""
    from bot.backup import BackupError
    from bot.backup import backup as make_backup

    data_dir, memory = _store_locations()
    try:
        report = make_backup(data_dir, dest, memory)
    except BackupError as e:
        _fail(str(e), 1)
        return
    typer.echo(f"backed up {report.summary()}")


@app.command()
def restore(
    src: Annotated[Path, typer.Argument(help="A directory made by `agentbot backup`.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing database and memory collections.")
    ] = False,
) -> None:
    """Put a backup back into DATA_DIR and the memory store. Stop the bot first."""
    from bot.backup import BackupError
    from bot.backup import restore as do_restore

    data_dir, memory = _store_locations()
    try:
        report = do_restore(src, data_dir, memory, force=force)
    except BackupError as e:
        _fail(str(e), 1)
        return
    typer.echo(f"restored {report.summary()}")


@app.command("migrate-store")
def migrate_store(
    to: Annotated[
        str | None,
        typer.Option("--to", help="postgresql:// URL of an empty database (default: DATABASE_URL)."),
    ] = None,
) -> None:
    """Copy DATA_DIR's SQLite store into an empty PostgreSQL database (README: Scaling). Stop the bot first."""
    from pathlib import Path

    from agent.logs import register_secret
    from bot.config import load_bot_settings
    from bot.store.copy import copy_sqlite_to_postgres
    from bot.store.db import StoreError

    try:
        data_dir = Path(load_agent_settings().data_dir)
        configured = load_bot_settings().database_url
    except ConfigError as e:
        _fail(str(e))
        return
    url = to or (configured.get_secret_value() if configured else None)
    if not url or not url.startswith(("postgresql://", "postgres://")):
        _fail("give the target as --to postgresql://user:password@host/db, or set DATABASE_URL")
        return
    register_secret(url)
    try:
        report = asyncio.run(copy_sqlite_to_postgres(data_dir / "agentbot.sqlite3", url))
    except StoreError as e:
        _fail(str(e), 1)
        return
    typer.echo(f"moved {report.summary()}; set DATABASE_URL to that database and start the bot")


def main() -> None:
    # Every module reads its settings from the environment; .env fills in what the environment lacks.
    from dotenv import load_dotenv

    load_dotenv(".env", override=False)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
