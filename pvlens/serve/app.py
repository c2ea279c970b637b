"""The playground's routes: the page, its configuration, and the streamed generation.

POST /api/generate answers 4xx with `{"error": message}` for bad input (checked before anything
is generated) and otherwise streams newline-delimited JSON events (`queued`, `text`,
`projections`, `judge`, `done`, or `error`).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from pvlens.errors import InputError, PvlensError
from pvlens.serve.session import Plan, RequestQueue, Session, SteerRequest

log = logging.getLogger("pvlens.serve")


def page_html() -> str:
    """The one HTML page (vanilla JavaScript, shipped as package data)."""
    return resources.files("pvlens.serve").joinpath("page.html").read_text(encoding="utf-8")


def validation_message(exc: RequestValidationError) -> str:
    """Pydantic's error list as one readable line: `traits.0.alpha: Input should be ...`."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", "invalid"))
    return "; ".join(parts) or "invalid request"


def ndjson(event: dict[str, Any]) -> bytes:
    return (json.dumps(event, allow_nan=False) + "\n").encode()


async def queued_events(session: Session, queue: RequestQueue, plan: Plan) -> AsyncIterator[bytes]:
    """Wait for this request's turn (saying how many are ahead), then stream its events."""
    queue.size += 1
    try:
        yield ndjson({"type": "queued", "ahead": queue.size - 1})
        async with queue.lock:
            async for event in session.stream(plan):
                yield ndjson(event)
    except Exception as e:  # noqa: BLE001 — the page gets a message, the log the traceback
        log.exception("generation failed")
        yield ndjson({"type": "error", "message": f"generation failed: {type(e).__name__}: {e}"})
    finally:
        queue.size -= 1


def create_app(session: Session) -> FastAPI:
    """The FastAPI app serving `session` (one model; requests take turns)."""
    app = FastAPI(title="pvlens playground", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.session = session
    app.state.queue = None
    page = page_html()

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": validation_message(exc)}, status_code=422)

    @app.exception_handler(InputError)
    async def bad_input(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/api/config")
    async def config() -> dict[str, Any]:
        return session.describe()

    @app.post("/api/generate")
    async def generate(req: SteerRequest) -> StreamingResponse:
        plan = session.plan(req)  # InputError → 400 before anything streams
        if app.state.queue is None:  # made inside the server's event loop
            app.state.queue = RequestQueue()
        return StreamingResponse(queued_events(session, app.state.queue, plan),
                                 media_type="application/x-ndjson")

    return app


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_in_background(
    session: Session, host: str = "127.0.0.1", port: int | None = None, timeout: float = 30.0
) -> Iterator[str]:
    """Run the playground with uvicorn in a thread (e.g. from a notebook or a test); yields its URL
    and stops the server on exit."""
    import uvicorn

    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(create_app(session), host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True, name="pvlens-serve-http")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise PvlensError(f"the playground did not start on {host}:{port} (is the port taken?)")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout)
