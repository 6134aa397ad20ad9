"""``agentbot backup DIR`` / ``agentbot restore DIR``: a consistent copy of what a bot keeps.

Why SQLite's online backup API and not a file copy: the bot writes in WAL mode, so the main file alone
can lack committed pages that still sit in the ``-wal`` file, and a copy taken mid-checkpoint can be
torn. ``sqlite3.Connection.backup`` copies a snapshot of committed state while the bot keeps writing
(it restarts its page copy when a writer changes a page it already copied).

Why memory is copied through Chroma's API (ids, documents, metadata *and embeddings*) and not as a
directory: Chroma's persistent directory holds index segments that are flushed on their own schedule,
so a copy of it taken while the bot runs is not a consistent state, and a Chroma server has no
directory to copy at all. Copying the embeddings means a restore needs no embedding model and gives
the same search results.

A backup directory holds ``manifest.json`` (format, schema version, sizes and sha256 of every file),
``agentbot.sqlite3`` and ``memory/<collection>.jsonl``. Restore checks every checksum before it writes
anything, and refuses to overwrite an existing database or memory collection unless asked to.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.store.copy import open_elsewhere
from bot.store.migrations import MIGRATIONS

if TYPE_CHECKING:
    from agent.memory.chroma_store import ChromaMemory

__all__ = ["BackupError", "BackupReport", "backup", "move_memory", "restore"]

FORMAT = "agentbot-backup"
FORMAT_VERSION = 1
DB_NAME = "agentbot.sqlite3"
PAGE = 500
"""Rows per Chroma read/write: bounded memory whatever the store's size."""


class BackupError(Exception):
    """What went wrong, said for the operator; nothing was half-written."""


@dataclass(slots=True)
class BackupReport:
    directory: Path
    schema_version: int
    database_bytes: int
    collections: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        rows = sum(self.collections.values())
        n = len(self.collections)
        mem = (
            f"{rows} memory row{'s' * (rows != 1)} in {n} collection{'s' * (n != 1)}"
            if self.collections
            else "no memory"
        )
        return (
            f"{self.directory}: database schema v{self.schema_version} "
            f"({self.database_bytes / 1e6:.1f} MB), {mem}"
        )


def _connect(memory: ChromaMemory) -> Any:
    try:
        return memory.connect()
    except Exception as e:  # chromadb raises ValueError/ConnectionError/its own types
        raise BackupError(f"cannot open the memory store at {memory.where()}: {e}") from e


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _backup_database(src: Path, dest: Path, shown: Path) -> int:
    """``src`` copied to ``dest``; ``shown``: the directory the operator named (``dest`` is in its .partial)."""
    if not src.is_file():
        raise BackupError(f"no database at {src}: check DATA_DIR (nothing to back up)")
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30)
    target = sqlite3.connect(dest)
    try:
        source.backup(target, pages=1024)
        version = int(target.execute("PRAGMA user_version").fetchone()[0])
        check = target.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.Error as e:  # "disk I/O error" read as the live store's when it was the copy's disk
        raise BackupError(f"could not copy {src} into {shown}: {e}: is there room there?") from e
    finally:
        target.close()
        source.close()
    if check != "ok":
        raise BackupError(f"the copy of {src} failed SQLite's integrity check: {check}")
    return version


def _collections(client: Any, prefix: str) -> list[Any]:
    return sorted(
        (c for c in client.list_collections() if str(c.name).startswith(prefix + "-")), key=lambda c: c.name
    )


def _dump_collection(col: Any, out: Path) -> int:
    rows = 0
    with out.open("w", encoding="utf-8") as f:
        while True:
            page = col.get(limit=PAGE, offset=rows, include=["documents", "metadatas", "embeddings"])
            if not page["ids"]:
                return rows
            columns = (page["ids"], page["documents"], page["metadatas"], page["embeddings"])
            for rid, doc, meta, emb in zip(*columns, strict=True):
                line = {"id": rid, "document": doc, "metadata": meta, "embedding": [float(x) for x in emb]}
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
            rows += len(page["ids"])


def backup(data_dir: Path, dest: Path, memory: ChromaMemory | None) -> BackupReport:
    """Copy the database and the memory store into ``dest`` (new or empty). Safe while the bot runs.

    Written into ``dest.partial`` first and renamed at the end, so an interrupted backup never looks
    like a complete one.
    """
    if dest.exists() and not dest.is_dir():  # an empty file was said to be "not empty"
        raise BackupError(f"{dest} is a file, not a directory: give a new directory")
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} already exists and is not empty: give a new directory")
    work = dest.with_name(dest.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    try:  # made inside: a SIGTERM just after the mkdir (cron's `timeout`) left the empty .partial behind
        try:
            work.mkdir(parents=True)
        except OSError as e:  # read-only, no permission, a file in the way
            raise BackupError(f"cannot create {dest}: {e.strerror}: give a directory you can write") from e
        db_file = work / DB_NAME
        version = _backup_database(data_dir / DB_NAME, db_file, dest)
        report = BackupReport(dest, version, db_file.stat().st_size)
        files = {DB_NAME: {"bytes": db_file.stat().st_size, "sha256": _sha256(db_file)}}
        collections: list[dict[str, Any]] = []
        if memory is not None:
            client = _connect(memory)
            (work / "memory").mkdir()
            for col in _collections(client, memory.prefix):
                rel = f"memory/{col.name}.jsonl"
                rows = _dump_collection(col, work / rel)
                files[rel] = {"bytes": (work / rel).stat().st_size, "sha256": _sha256(work / rel)}
                space = ((getattr(col, "configuration", None) or {}).get("hnsw") or {}).get("space", "l2")
                collections.append(
                    {"name": col.name, "metadata": dict(col.metadata or {}), "space": space, "rows": rows}
                )
                report.collections[col.name] = rows
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "schema_version": version,
            "files": files,
            "memory": {"prefix": memory.prefix, "collections": collections} if memory is not None else None,
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if dest.exists():
            dest.rmdir()
        os.replace(work, dest)
    except OSError as e:  # the memory rows or the manifest on a disk that fills up: a traceback box
        shutil.rmtree(work, ignore_errors=True)
        raise BackupError(
            f"cannot write the backup into {dest}: {e.strerror or e}: is there room there?"
        ) from e
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return report


def _read_manifest(src: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(f"{src} is not an agentbot backup (no manifest.json)") from None
    except (OSError, ValueError) as e:
        raise BackupError(f"{src}/manifest.json cannot be read: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{src}/manifest.json is not an agentbot backup manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(
            f"{src} is backup format {manifest.get('format_version')}; this agentbot reads {FORMAT_VERSION}"
        )
    for rel, meta in dict(manifest.get("files") or {}).items():
        path = src / rel
        if not path.resolve().is_relative_to(src.resolve()):
            raise BackupError(f"{src}/manifest.json names a file outside the backup: {rel!r}")
        if not path.is_file():
            raise BackupError(f"{path} is missing from the backup")
        if _sha256(path) != meta.get("sha256"):
            raise BackupError(f"{path} does not match its checksum in manifest.json: the backup is damaged")
    return manifest


def _restored_from(target: Path, manifest: dict[str, Any]) -> bool:
    """``target`` is this backup's database as an earlier restore left it, untouched since (no WAL). A
    restore --force repeated after one stopped in its memory rows (Ctrl-C, a Chroma server gone) kept
    that copy as ``.before-restore``, over the store the first one had kept: the store was lost."""
    wal = Path(f"{target}-wal")
    if wal.exists() and wal.stat().st_size:
        return False
    return _sha256(target) == str((manifest.get("files") or {}).get(DB_NAME, {}).get("sha256"))


def _same_embedding(cols: list[dict[str, Any]], memory: ChromaMemory) -> None:
    """The backup's memory was embedded by the model MEMORY_EMBEDDING names here (its family: the id's
    weights hash is known only once the model loads). Restored anyway, the bot then refused to start
    ("EmbeddingMismatch"), with the database already replaced."""
    from agent.memory.chroma_collections import setting_of

    family = memory.embedding_id.split("@")[0]
    for col in cols:
        stored = str((col.get("metadata") or {}).get("agentbot_embedding") or "")
        if stored and stored.split("@")[0] != family:
            raise BackupError(
                f"the backup's memory was embedded by {stored.split('@')[0]!r}, but this agentbot is set to "
                f"{family!r}: set {setting_of(stored)} as the bot that made the backup had it, then restore. "
                "Nothing was written"
            )


def _rows(path: Path) -> Iterator[list[dict[str, Any]]]:
    with path.open(encoding="utf-8") as f:
        while batch := [json.loads(line) for line in itertools.islice(f, PAGE)]:
            yield batch


def restore(src: Path, data_dir: Path, memory: ChromaMemory | None, *, force: bool = False) -> BackupReport:
    """Put a backup back. Stop the bot first. Checks everything before writing; ``force`` replaces an
    existing database (kept beside it as ``agentbot.sqlite3.before-restore``) and memory collections."""
    manifest = _read_manifest(src)
    if (version := int(manifest.get("schema_version") or 0)) > len(MIGRATIONS):
        # It was put in place ("restored ... schema v8"), and the bot then refused to start on it.
        raise BackupError(
            f"{src} holds database schema version {version}, but this agentbot knows up to {len(MIGRATIONS)}: "
            "it was made by a newer agentbot; upgrade agentbot, then restore (CHANGELOG.md lists each "
            "release's schema version). Nothing was written"
        )
    target = data_dir / DB_NAME
    if target.exists() and not force:
        raise BackupError(f"{target} already exists: restore into an empty DATA_DIR, or pass --force")
    if target.exists() and open_elsewhere(target):  # --force under a running bot: it kept writing into
        # the replaced file (its WAL deleted under it) and overwrote the restore with its next checkpoint
        raise BackupError(f"{target} is open in another process (a running bot?): stop the bot, then restore")
    mem_manifest = manifest.get("memory")
    cols: list[dict[str, Any]] = list(mem_manifest["collections"]) if mem_manifest else []
    if memory is not None:
        _same_embedding(cols, memory)
    client = _connect(memory) if (memory is not None and cols) else None
    if cols and memory is None:
        raise BackupError("the backup holds memory, but memory is off here (MEMORY_ENABLED=false)")
    if client is not None and not force:
        existing = {c.name for c in client.list_collections()}
        clash = sorted(existing & {c["name"] for c in cols})
        if clash:
            raise BackupError(
                f"the memory store at {memory.where()} already has {', '.join(clash[:3])}: "  # type: ignore[union-attr]
                "restore into an empty one, or pass --force"
            )
    tmp = data_dir / (DB_NAME + ".restoring")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / DB_NAME, tmp)
        if target.exists() and not _restored_from(target, manifest):
            kept = data_dir / (DB_NAME + ".before-restore")
            for suffix in ("-wal", "-shm"):  # an earlier restore's would be replayed into this one
                with contextlib.suppress(FileNotFoundError):
                    os.remove(str(kept) + suffix)
            os.replace(target, kept)
            # After a crash the WAL holds the latest commits: the kept copy was missing them.
            with contextlib.suppress(FileNotFoundError):
                os.replace(str(target) + "-wal", str(kept) + "-wal")
        for suffix in ("-wal", "-shm"):  # a stale WAL beside the restored file would be replayed into it
            with contextlib.suppress(FileNotFoundError):
                os.remove(str(target) + suffix)
        os.replace(tmp, target)
    except OSError as e:  # read-only, no permission, a file in the way, a disk that fills up
        raise BackupError(f"cannot write the database into {data_dir}: {e.strerror}: check DATA_DIR") from e
    finally:  # an interrupt (Ctrl-C, SIGTERM) mid-copy left agentbot.sqlite3.restoring behind
        with contextlib.suppress(OSError):
            tmp.unlink()
    report = BackupReport(src, int(manifest.get("schema_version") or 0), target.stat().st_size)
    for col_meta in cols:
        name = col_meta["name"]
        assert client is not None
        with contextlib.suppress(Exception):  # absent is fine; chromadb's error type varies by version
            client.delete_collection(name)
        col = client.create_collection(
            name,
            metadata=col_meta.get("metadata") or None,
            configuration={"hnsw": {"space": str(col_meta.get("space") or "l2")}},
            embedding_function=None,
        )
        count = 0
        for batch in _rows(src / "memory" / f"{name}.jsonl"):
            col.add(
                ids=[r["id"] for r in batch],
                documents=[r["document"] for r in batch],
                metadatas=[r["metadata"] for r in batch],
                embeddings=[r["embedding"] for r in batch],
            )
            count += len(batch)
        report.collections[name] = count
    return report


# --- scaling out (issue 18.4): `agentbot migrate-store` moves the embedded memory to the Chroma server ---
def move_memory(data_dir: Path, server: ChromaMemory) -> dict[str, int]:
    """Copy the embedded memory store under ``DATA_DIR/memory`` into the Chroma server ``server`` names
    (``CHROMA_HOST``); {collection: rows}. Without it, a bot moved to shard processes with a Chroma
    server silently started with no memory. Rows keep their ids, which are content hashes, and are
    upserted: a collection the server already has is merged, never duplicated. A collection the server
    holds with other metadata (another embedding) is refused before anything is written."""
    from agent.memory.chroma_store import ChromaMemory

    if not server.host or not (data_dir / "memory").is_dir():
        return {}
    source = _collections(
        _connect(ChromaMemory(data_dir / "memory", embedding=server.embedding)), server.prefix
    )
    client = _connect(server)
    existing = {c.name: c for c in _collections(client, server.prefix)}
    for col in source:
        there = existing.get(col.name)
        if there is not None and dict(there.metadata or {}) != dict(col.metadata or {}):
            raise BackupError(
                f"the memory store at {server.where()} already has {col.name} with other settings "
                f"({there.metadata} here, {col.metadata} in {data_dir / 'memory'}): nothing was moved"
            )
    moved: dict[str, int] = {}
    for col in source:
        space = ((getattr(col, "configuration", None) or {}).get("hnsw") or {}).get("space", "l2")
        target = client.get_or_create_collection(
            col.name,
            metadata=dict(col.metadata or {}) or None,
            configuration={"hnsw": {"space": space}},
            embedding_function=None,
        )
        rows = 0
        while page := col.get(limit=PAGE, offset=rows, include=["documents", "metadatas", "embeddings"]):
            if not page["ids"]:
                break
            target.upsert(
                ids=page["ids"],
                documents=page["documents"],
                metadatas=page["metadatas"],
                embeddings=page["embeddings"],
            )
            rows += len(page["ids"])
        moved[col.name] = rows
    return moved
