"""``agentbot backup``, ``restore`` and ``migrate-store``: the store's commands (README: Backups, Scaling)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agent.config import ConfigError
from bot.cli_help import EXIT_FAILED, FLAG, Command, agent_settings, fail, failing

if TYPE_CHECKING:
    from agent.memory.chroma_store import ChromaMemory


def _store_locations() -> tuple[Path, ChromaMemory | None]:
    """DATA_DIR and the memory store the bot uses (not opened: backup copies rows, needs no embedding)."""
    from bot.config import load_bot_settings

    settings = agent_settings()
    data_dir = Path(settings.data_dir)
    with failing(ConfigError, ValueError):
        bot_settings = load_bot_settings()
        enabled = bot_settings.memory_enabled
        if bot_settings.database_url is not None:  # DATA_DIR's SQLite file, if any, is not the store
            raise ConfigError(
                "DATABASE_URL is set, so the store is in PostgreSQL: back it up with pg_dump and restore it "
                "with pg_restore (backup and restore copy DATA_DIR's SQLite store; README: Backups)"
            )
        if not enabled:  # chromadb is not imported at all (0.6 s of CPU per command, measured)
            return data_dir, None
        from agent.memory.chroma_store import ChromaMemory

        memory = ChromaMemory.from_settings(data_dir / "memory", settings)
    return data_dir, memory


def backup(dest: Annotated[Path, typer.Argument(metavar="DEST", hidden=True)]) -> None:
    """Copy the database and the memory store into DEST; safe while the bot runs (README: Backups).

    DEST is a new (or empty) directory for the copy.
    """
    from bot.ask_input import interruptible
    from bot.backup import BackupError
    from bot.backup import backup as make_backup

    data_dir, memory = _store_locations()
    # SIGTERM/SIGHUP (cron's `timeout`, a container stopped) end it as Ctrl-C does, so DEST.partial is
    # removed: the default left it, a copy of every session, beside the backups for good.
    with failing(BackupError, code=EXIT_FAILED), interruptible():
        report = make_backup(data_dir, dest, memory)
    typer.echo(f"backed up {report.summary()}")
    if memory is None and any((data_dir / "memory").glob("*")):  # "no memory" read as none to copy
        typer.echo(
            f"agentbot: {data_dir / 'memory'} was not copied: MEMORY_ENABLED=false; run the backup with "
            "MEMORY_ENABLED=true to include the memory stored there",
            err=True,
        )


def restore(
    src: Annotated[Path, typer.Argument(metavar="SRC", hidden=True)],
    force: Annotated[
        bool,
        typer.Option("--force", metavar=FLAG, help="Replace an existing database and memory collections."),
    ] = False,
) -> None:
    """Put a backup back into DATA_DIR and the memory store. Stop the bot first.

    SRC is a directory made by `agentbot backup`.
    """
    from bot.ask_input import interruptible
    from bot.backup import BackupError
    from bot.backup import restore as do_restore

    data_dir, memory = _store_locations()
    # SIGHUP (a closed SSH session) killed it with -1 and no line; now it and SIGTERM end it as Ctrl-C
    # does (130, "agentbot: interrupted"), and the database's temporary copy is removed.
    with failing(BackupError, code=EXIT_FAILED), interruptible():
        report = do_restore(src, data_dir, memory, force=force)
    typer.echo(f"restored {report.summary()}")


def migrate_store(
    to: Annotated[
        str | None,
        typer.Option(
            "--to", metavar="URL", help="postgresql:// URL of an empty database (default: DATABASE_URL)."
        ),
    ] = None,
) -> None:
    """Copy DATA_DIR's SQLite store into an empty PostgreSQL database (README: Scaling). Stop the bot first."""
    from agent.logs import register_secret
    from bot.config import load_bot_settings, postgres_url_problem
    from bot.store.copy import check_not_open, copy_sqlite_to_postgres
    from bot.store.db import StoreError

    data_dir = Path(agent_settings().data_dir)
    with failing(ConfigError):
        configured = load_bot_settings().database_url
    url = to or (configured.get_secret_value() if configured else None)
    if not url or not url.startswith(("postgresql://", "postgres://")):
        fail("give the target as --to postgresql://user:password@host/db, or set DATABASE_URL")
    register_secret(url)
    if to and (problem := postgres_url_problem(to)) is not None:  # as DATABASE_URL's is, never a traceback
        fail(f"--to: {problem}")
    with failing(StoreError, code=EXIT_FAILED):
        check_not_open(data_dir / "agentbot.sqlite3")  # before memory too: a running bot writes both
    memory = _moved_memory(data_dir)  # first: repeating it merges (content-hash ids), never duplicates
    with failing(StoreError, code=EXIT_FAILED):
        setting = "--to" if to else "DATABASE_URL"  # the error names where the operator gave the URL
        report = asyncio.run(copy_sqlite_to_postgres(data_dir / "agentbot.sqlite3", url, setting))
    typer.echo(f"moved {report.summary()}{memory}; set DATABASE_URL to that database and start the bot")


def _moved_memory(data_dir: Path) -> str:
    """With ``CHROMA_HOST`` set, DATA_DIR's embedded memory goes to that server with the store (shard
    processes share memory only there); what moved, for migrate-store's report."""
    from bot.backup import BackupError, move_memory
    from bot.config import load_bot_settings

    settings = agent_settings()
    with failing(ConfigError):
        enabled = load_bot_settings().memory_enabled
    if not enabled:
        return ""
    if not (settings.chroma_host or "").strip():
        # It moved nothing and said nothing: an operator moving to shard processes read "moved ..." and
        # started them on a Chroma server without the memory (README: Moving a store).
        embedded = data_dir / "memory"
        return (
            f"; memory stays in {embedded} (set CHROMA_HOST to move it to the Chroma server shard "
            "processes share; one process with DATABASE_URL may keep it there)"
            if (embedded / "chroma.sqlite3").is_file()
            else ""
        )
    from agent.memory.chroma_store import ChromaMemory

    with failing(BackupError, code=EXIT_FAILED):
        moved = move_memory(data_dir, ChromaMemory.from_settings(data_dir / "memory", settings))
    rows = sum(moved.values())
    n = len(moved)
    where = settings.memory_where()
    return (
        f"; memory {rows:,} row{'s' * (rows != 1)} in {n} collection{'s' * (n != 1)} to {where}"
        if moved
        else ""
    )


def add_store_commands(app: typer.Typer) -> None:
    app.command(cls=Command)(backup)
    app.command(cls=Command)(restore)
    app.command("migrate-store", cls=Command)(migrate_store)
