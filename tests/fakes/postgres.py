"""A throwaway PostgreSQL server for the tests: ``initdb`` into a temp dir, started on a free port of
127.0.0.1, fsync off (``durable=True``: PostgreSQL's own durable defaults, as a production server runs;
``bench/quota_store.py`` measures both), stopped and deleted at the end.

Where the server comes from: Debian's ``postgresql`` package (``initdb`` and ``pg_ctl`` on PATH or under
``/usr/lib/postgresql/*/bin``); ``.ci/run`` installs it when missing. ``initdb`` refuses to run as root,
so as root the cluster belongs to the ``postgres`` system user the package creates (``runuser``).
Missing binaries are an error with the fix, never a silent skip.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[-1:]), None
    )
    if not found:
        raise RuntimeError(
            f"PostgreSQL's {name} was not found: install the server (Debian: apt-get install postgresql) "
            "so the store contract tests can start a throwaway one"
        )
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.dir = Path(tempfile.mkdtemp(prefix="agentbot-pg-"))
        self.port = _free_port()
        self.user = "agentbot"
        self._runas: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self._runas = ["runuser", "-u", "postgres", "--"]

    def _run(self, *cmd: str) -> None:
        proc = subprocess.run([*self._runas, *cmd], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {proc.stdout[-500:]}{proc.stderr[-500:]}")

    def start(self) -> PostgresServer:
        data = str(self.dir / "data")
        self._run(_binary("initdb"), "-D", data, "-A", "trust", "-U", self.user, "-E", "UTF8", "--no-sync")
        self.resume()
        return self

    def halt(self) -> None:
        """An outage: the server stops (its connections are closed) and keeps its data for :meth:`resume`."""
        self._run(_binary("pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """(Re)starts the server on the same port and data."""
        data = str(self.dir / "data")
        opts = f"-k {self.dir} -p {self.port} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if not self.durable:  # tests need no crash safety: a commit then waits for no disk flush
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(_binary("pg_ctl"), "-D", data, "-o", opts, "-l", str(self.dir / "log"), "-w", "start")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    async def fresh_database(self, prefix: str = "t") -> str:
        """A new empty database on this server (one per test, so tests share the server, not state)."""
        import asyncpg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f"CREATE DATABASE {name}")
        finally:
            await conn.close()
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(_binary("pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
