"""A throwaway PostgreSQL server for the tests: ``initdb`` into a temp dir, started on a free port of
127.0.0.1, fsync off (``durable=True``: PostgreSQL's own durable defaults, as a production server runs;
``bench/quota_store.py`` measures both), stopped and deleted at the end.

Where the server comes from: Debian's ``postgresql`` package (``initdb`` and ``pg_ctl`` on PATH or under
``/usr/lib/postgresql/*/bin``); ``.ci/run`` installs it when missing. ``initdb`` refuses to run as root,
so as root the cluster belongs to the ``postgres`` system user the package creates (``runuser``).
Missing binaries are an error with the fix, never a silent skip.

``initdb`` runs once per test run, not once per xdist worker: it cost ~0.5 s of CPU (~5 s of the 2-core
suite's CPU at ``-n 10``), copying its cluster ``cp -a`` ~0.03 s. The run's controller names an empty
directory in ``AGENTBOT_PG_TEMPLATE`` (tests/conftest.py); the first server to start makes the cluster
there under a file lock, every server copies it. Without that variable (``bench/``) each runs ``initdb``.

Where the clusters live: ``/dev/shm`` (memory) when it has room, else the temp directory; a ``durable``
server always on disk. This machine's disk is ext4 mounted with ``discard``: each file removed is
trimmed, and a cluster is thousands of files. Measured with 25 databases made and opened by the store
(its schema) on one server, the machine loaded (load average 6-8): 26.2 s on disk, 9.1 s in
``/dev/shm``, 3.6 s there with ``STRATEGY FILE_COPY`` (below); deleting the cluster afterwards 10.7 s
on disk, 0.3-0.5 s in memory. test_store_settings.py's worker spent 7-12 s of its last teardown removing
its cluster.
"""

from __future__ import annotations

import contextlib
import fcntl
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


TEMPLATE_ENV = "AGENTBOT_PG_TEMPLATE"
"""An empty directory, shared by a test run's workers, where the first ``initdb`` is kept for the others."""


def _runas() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _own(path: Path) -> None:
    """As root, ``path`` belongs to the ``postgres`` user, which runs the server and ``initdb``."""
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(path, owner.pw_uid, owner.pw_gid)


def _run(*cmd: str) -> None:
    proc = subprocess.run([*_runas(), *cmd], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {proc.stdout[-500:]}{proc.stderr[-500:]}")


def _initdb(data: str, user: str) -> None:
    _run(_binary("initdb"), "-D", data, "-A", "trust", "-U", user, "-E", "UTF8", "--no-sync")


def _template(root: Path, user: str) -> Path:
    """The run's prepared cluster under ``root``, made by the first caller (the others wait on the lock)."""
    root.mkdir(parents=True, exist_ok=True)
    _own(root)
    data = root / "data"
    with open(root / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "ready").exists():  # a half-made cluster (initdb failed) is made again
            _run("rm", "-rf", str(data))
            _initdb(str(data), user)
            (root / "ready").touch()
    return data


SHM = Path("/dev/shm")
SHM_FREE_AT_LEAST = 4 << 30
"""Room ``/dev/shm`` must have to be used (a database is ~7.5 MB; a container's default is 64 MB)."""


def scratch_root() -> str | None:
    """The directory for throwaway clusters (``tempfile``'s ``dir``): ``/dev/shm`` if it has room, else
    None (the temp directory)."""
    try:
        free = os.statvfs(SHM)
    except OSError:
        return None
    return str(SHM) if free.f_bavail * free.f_frsize >= SHM_FREE_AT_LEAST else None


OWNER = "owner.pid"
"""In a throwaway cluster's (or the run's template's) directory: the pid of the test process it belongs to."""


def mark_owner(path: Path) -> None:
    (path / OWNER).write_text(str(os.getpid()))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(root: str | None = None) -> int:
    """Remove the clusters and templates of test runs that were killed (``kill -9``, a CI timeout): their
    cleanup never ran, and in ``/dev/shm`` each held ~40 MB of memory until a reboot, its server still up.
    Only directories whose owner process is gone; a live run's (another checkout's) are left alone."""
    removed = 0
    for d in Path(root or tempfile.gettempdir()).glob("agentbot-pg-*"):
        try:
            pid = int((d / OWNER).read_text())
        except (OSError, ValueError):
            continue  # not ours to judge (an older run's, or one still being made)
        if _alive(pid):
            continue
        if (d / "data" / "postmaster.pid").exists():  # its server outlived the run: stop it first
            with contextlib.suppress(Exception):
                _run(_binary("pg_ctl"), "-D", str(d / "data"), "-m", "immediate", "stop")
        shutil.rmtree(d, ignore_errors=True)
        removed += 1
    return removed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.dir = Path(tempfile.mkdtemp(prefix="agentbot-pg-", dir=None if durable else scratch_root()))
        self.port = _free_port()
        self.user = "agentbot"
        mark_owner(self.dir)
        _own(self.dir)

    def _run(self, *cmd: str) -> None:
        _run(*cmd)

    def start(self) -> PostgresServer:
        data = str(self.dir / "data")
        if template := os.environ.get(TEMPLATE_ENV):
            self._run("cp", "-a", str(_template(Path(template), self.user)), data)
        else:
            _initdb(data, self.user)
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
            # FILE_COPY copies template1's files; the default since PostgreSQL 15 (WAL_LOG) writes each of
            # its blocks through the WAL too, twice the writes when no crash needs it (measured above).
            fast = not self.durable and conn.get_server_version().major >= 15
            await conn.execute(f"CREATE DATABASE {name}" + (" STRATEGY FILE_COPY" if fast else ""))
        finally:
            await conn.close()
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(_binary("pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
