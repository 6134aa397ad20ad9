"""A real Chroma server for tests: ``chroma run`` (the CLI chromadb ships) on a free port of 127.0.0.1,
started and stopped by the test, its data in a temp directory. Telemetry is off (``ANONYMIZED_TELEMETRY``);
nothing leaves loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def chroma_cli() -> str:
    beside = Path(sys.executable).with_name("chroma")
    found = str(beside) if beside.exists() else shutil.which("chroma")
    if not found:
        raise RuntimeError("the chroma CLI comes with chromadb; reinstall the dev environment")
    return found


class ChromaServer:
    def __init__(self, path: Path) -> None:
        self.path = path
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, within: float = 30.0) -> ChromaServer:
        env = {**os.environ, "ANONYMIZED_TELEMETRY": "False", "CHROMA_TELEMETRY": "False"}
        cmd = [chroma_cli(), "run", "--path", str(self.path), "--host", "127.0.0.1", "--port", str(self.port)]
        self._proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + within
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/api/v2/heartbeat", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self._proc.poll() is not None:
                raise RuntimeError(f"chroma server exited at start-up (code {self._proc.returncode})")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"chroma server did not answer its heartbeat within {within} s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
