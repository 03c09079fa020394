"""The HTTP ceiling: a bare ASGI app with no storage behind it.

PUT reads and discards the request body; GET returns a fixed body. Run
under uvicorn with the same settings as our servers (uvloop, httptools).
Used by ``benchmarks/ceilings.py``.
"""

from __future__ import annotations

import os
from typing import Any

BODY = os.urandom(1024) * (int(os.environ.get("BARE_BODY_BYTES", 8 * 1024 * 1024)) // 1024)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Warm glibc's allocator (docs/benchmarks.md, "This machine"): one big free raises
                # its mmap threshold, as our servers do at start-up.
                bytearray(16 * 1024 * 1024)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["method"] == "PUT":
        size = 0
        more = True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-length", str(len(BODY)).encode())],
    })
    await send({"type": "http.response.body", "body": BODY})
