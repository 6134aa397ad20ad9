"""Optional health endpoint for container orchestrators (``HEALTH_PORT``): ``GET /healthz``.

200 when the gateway is connected and the database answers; 503 otherwise, with the reason in JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from bot.app import AgentBot


async def health(bot: AgentBot) -> tuple[int, dict[str, Any]]:
    sv = bot.services
    report: dict[str, Any] = {
        "discord": "connected" if bot.is_ready() and not bot.is_closed() else "disconnected"
    }
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
    report["running_turns"] = sum(1 for sid in list(bot.runner._workers) if bot.runner.is_running(sid))
    ok = report["discord"] == "connected" and report["database"] == "ok"
    report["status"] = "ok" if ok else "unhealthy"
    return (200 if ok else 503), report


async def start_health_server(bot: AgentBot, host: str, port: int) -> web.AppRunner:
    async def handler(_: web.Request) -> web.Response:
        status, body = await health(bot)
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_get("/healthz", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
