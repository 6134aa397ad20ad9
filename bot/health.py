"""Optional health endpoint for container orchestrators (``HEALTH_PORT``): ``GET /healthz``.

200 when the gateway is connected and the database answers; 503 otherwise, with the reason in JSON.
Takes what it reports on as arguments (no import of the app, so no cycle back to it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent.config import ConfigError

if TYPE_CHECKING:
    from bot.runner import SessionRunner
    from bot.services import Services


async def health(connected: bool, sv: Services, runner: SessionRunner) -> tuple[int, dict[str, Any]]:
    report: dict[str, Any] = {"discord": "connected" if connected else "disconnected"}
    try:
        await sv.db.fetchone("SELECT 1")
        report["database"] = "ok"
    except Exception as e:
        report["database"] = f"error: {type(e).__name__}"
    report["memory"] = (
        "ok"
        if sv.memory is not None
        else ("off" if not sv.bot_settings.memory_enabled else f"unavailable: {sv.memory_error}")
    )
    report["running_turns"] = runner.running()
    ok = report["discord"] == "connected" and report["database"] == "ok"
    report["status"] = "ok" if ok else "unhealthy"
    return (200 if ok else 503), report


async def start_health_server(
    connected: Callable[[], bool], sv: Services, runner: SessionRunner, host: str, port: int
) -> web.AppRunner:
    async def handler(_: web.Request) -> web.Response:
        status, body = await health(connected(), sv, runner)
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_get("/healthz", handler)
    site_runner = web.AppRunner(app, access_log=None)
    await site_runner.setup()
    try:
        await web.TCPSite(site_runner, host, port).start()
    except OSError as e:  # was "could not reach Discord (OSError ...): check the network"
        await site_runner.cleanup()
        raise ConfigError(
            f"HEALTH_PORT={port}: cannot listen on {host}:{port} ({e.strerror or e}): another process "
            "uses it; choose a free port, or leave HEALTH_PORT empty"
        ) from None
    return site_runner
