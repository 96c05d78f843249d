"""The HTTP health probe `shelfproof status` and `up` use, against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio

from aiohttp import web

from shelfproof.cli.health import http_health
from shelfproof.runtime.processes import free_port


async def test_http_health_reads_our_json_streamlits_ok_and_failures() -> None:
    app = web.Application()
    app.router.add_get("/healthz", lambda r: web.json_response({"status": "SERVING"}))
    app.router.add_get("/draining", lambda r: web.json_response({"status": "NOT_SERVING"}))
    app.router.add_get("/_stcore/health", lambda r: web.Response(text="ok"))
    app.router.add_get("/down", lambda r: web.Response(status=503, text="ok"))
    app.router.add_get("/garbage", lambda r: web.Response(text="<html>"))

    async def slow_body(request: web.Request) -> web.StreamResponse:
        # headers first, the body in a later segment (as Streamlit's server sends it)
        reply = web.StreamResponse(headers={"Content-Type": "application/json"})
        await reply.prepare(request)
        await asyncio.sleep(0.05)
        await reply.write(b'{"status": "SERVING"}')
        await reply.write_eof()
        return reply

    app.router.add_get("/slow", slow_body)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        address = f"127.0.0.1:{port}"
        assert await http_health(address, "/healthz") == "SERVING"
        assert await http_health(address, "/draining") == "NOT_SERVING"
        assert await http_health(address, "/_stcore/health") == "SERVING"
        assert await http_health(address, "/down") == "NOT_SERVING"
        assert await http_health(address, "/garbage") == "UNREACHABLE"
        assert await http_health(address, "/slow") == "SERVING"
    finally:
        await runner.cleanup()
    assert await http_health(address, "/healthz", deadline_s=0.5) == "UNREACHABLE"  # nothing listens now
