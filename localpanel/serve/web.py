"""`localpanel serve`: a local web page to start runs, watch them live and read past ones (Starlette + uvicorn).

The page is a thin layer over the service, fed by the same run events as the CLI and the MCP server (as
server-sent events). Safe by default: it binds to 127.0.0.1, answers only requests addressed to the host it
listens on (no DNS rebinding), takes state-changing calls only as JSON from its own origin, bounds request
bodies, loads nothing from outside the machine (a Content-Security-Policy says so to the browser), and every
string the page shows is inserted as text, never as markup.
"""

from __future__ import annotations

import ipaddress
import json
from importlib.resources import files
from typing import Any

import anyio
from sse_starlette.sse import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from localpanel.errors import InputError, LocalpanelError, RunNotFound
from localpanel.runs.jobs import JobKey
from localpanel.serve.service import Service, sentence

MAX_BODY = 64 * 1024
ASSETS = files("localpanel.serve") / "webui"
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
CARD_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'"
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=SECURITY_HEADERS)


def _json(data: Any) -> JSONResponse:
    return JSONResponse(data, headers=SECURITY_HEADERS)


async def _body(request: Request) -> dict:
    """The request's JSON object, at most MAX_BODY bytes, sent as JSON from this page's own origin."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host')}":
        raise InputError("Requests must come from this page.")
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise InputError("Send the request body as application/json.")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise _TooLarge()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise _TooLarge()
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise InputError("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise InputError("The request body must be a JSON object.")
    return data


class _TooLarge(Exception):
    pass


def build(service: Service, hosts: list[str]) -> Starlette:
    async def call(fn, *args, **kwargs):
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))

    def guarded(handler):
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except _TooLarge:
                return _error(f"The request is larger than {MAX_BODY // 1024} KiB.", 413)
            except LocalpanelError as exc:
                return _error(str(exc), 404 if isinstance(exc, RunNotFound) else 400)
            except Exception as exc:  # noqa: BLE001 - one sentence, and the server goes on
                return _error(sentence(exc), 500)
        return endpoint

    def asset(name: str, media_type: str, csp: str | None = None):
        body = (ASSETS / name).read_bytes()

        async def endpoint(request: Request) -> Response:
            headers = dict(SECURITY_HEADERS)
            if csp:
                headers["Content-Security-Policy"] = csp
            return Response(body, media_type=media_type, headers=headers)
        return endpoint

    @guarded
    async def catalog(request: Request) -> Response:
        return _json(await call(service.catalog))

    @guarded
    async def runs(request: Request) -> Response:
        return _json(await call(service.runs, request.query_params.get("q", "")[:200]))

    @guarded
    async def start(request: Request) -> Response:
        job = await call(service.runner.start_request, await _body(request))
        return _json(await call(service.snapshot, job.id))

    @guarded
    async def snapshot(request: Request) -> Response:
        return _json(await call(service.snapshot, request.path_params["run_id"]))

    @guarded
    async def replay_state(request: Request) -> Response:
        return _json(await call(service.snapshot, JobKey(request.path_params["run_id"], "replay").handle))

    @guarded
    async def charts(request: Request) -> Response:
        return _json(await call(service.live_charts, request.path_params["run_id"]))

    @guarded
    async def resume(request: Request) -> Response:
        await _body(request)
        job = await call(service.resume, request.path_params["run_id"])
        return _json(await call(service.snapshot, job.id))

    @guarded
    async def replay(request: Request) -> Response:
        await _body(request)
        job = await call(service.replay, request.path_params["run_id"])
        return _json({"job_id": job.id, "state": job.state})

    @guarded
    async def card(request: Request) -> Response:
        text = await call(service.card, request.path_params["run_id"], "html")
        return HTMLResponse(text, headers={**SECURITY_HEADERS, "Content-Security-Policy": CARD_CSP})

    open_streams = [0]

    def event_stream(request: Request, key: JobKey) -> Response:
        """A job's events as server-sent events: those so far, then each as it comes, until the job ends. A stream
        waits on the event loop (it holds no worker thread, which requests need), and at most MAX_STREAMS are open
        at once."""
        job = service.queue.get(key)
        try:
            seq = int(request.headers.get("last-event-id") or request.query_params.get("since") or 0)
        except ValueError:
            seq = 0
        if open_streams[0] >= MAX_STREAMS:
            return _error(f"{MAX_STREAMS} event streams are open already; close a tab watching a run and try again.", 503)
        open_streams[0] += 1
        released = [False]

        def release() -> None:  # once, whether the stream ended, was cut, or never started
            if not released[0]:
                released[0] = True
                open_streams[0] -= 1

        async def stream():
            nonlocal seq
            try:
                if job is None:  # not this server's: read its state from the snapshot instead
                    yield ServerSentEvent(json.dumps({"type": "state", "state": "done"}), event="state")
                    return
                while True:
                    for event in job.log.since(seq):
                        seq += 1
                        yield ServerSentEvent(event.model_dump_json(), id=str(seq), event="run")
                    if job.done and seq >= len(job.log.events):
                        yield ServerSentEvent(json.dumps({"type": "state", "state": job.state, "error": job.error}),
                                              event="state")
                        return
                    if await request.is_disconnected():
                        return
                    await anyio.sleep(STREAM_POLL)
            finally:
                release()

        return EventSourceResponse(stream(), ping=15, headers=SECURITY_HEADERS, background=BackgroundTask(release))

    @guarded
    async def events(request: Request) -> Response:
        run = await call(service.find, request.path_params["run_id"])
        return event_stream(request, JobKey(run.path.name))

    @guarded
    async def replay_events(request: Request) -> Response:
        run = await call(service.find, request.path_params["run_id"])
        return event_stream(request, JobKey(run.path.name, "replay"))

    routes = [
        Route("/", asset("index.html", "text/html; charset=utf-8", PAGE_CSP)),
        Route("/app.js", asset("app.js", "text/javascript; charset=utf-8")),
        Route("/app.css", asset("app.css", "text/css; charset=utf-8")),
        Route("/favicon.ico", lambda request: Response(status_code=204)),  # no icon; a browser asking is not an error
        Route("/api/catalog", catalog),
        Route("/api/runs", runs, methods=["GET"]),
        Route("/api/runs", start, methods=["POST"]),
        Route("/api/runs/{run_id}", snapshot),
        Route("/api/runs/{run_id}/events", events),
        Route("/api/runs/{run_id}/charts", charts),
        Route("/api/runs/{run_id}/resume", resume, methods=["POST"]),
        Route("/api/runs/{run_id}/replay", replay, methods=["POST"]),
        Route("/api/runs/{run_id}/replay", replay_state, methods=["GET"]),
        Route("/api/runs/{run_id}/replay/events", replay_events),
        Route("/runs/{run_id}", card),
    ]
    middleware = [Middleware(HostCheck, allowed=hosts)]
    return Starlette(routes=routes, middleware=middleware)


MAX_STREAMS = 32  # event streams open at once (each tab watching a run holds one)
STREAM_POLL = 0.2  # seconds between a waiting stream's looks at its job's events

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARDS = ("0.0.0.0", "::", "")


def _as_host_header(name: str) -> str:
    """A name as the Host header carries it (lower case; an IPv6 literal in brackets)."""
    name = name.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        return name
    try:
        ipaddress.IPv6Address(name)
        return f"[{name}]"
    except ValueError:
        return name


def host_name(header: str) -> str:
    """The name a Host header carries, without its port: ``[::1]:8765`` -> ``[::1]``, ``localhost:80`` ->
    ``localhost``; a malformed one gives ``""``, which no list allows."""
    header = header.strip().lower()
    if header.startswith("["):
        name, _, rest = header.partition("]")
        return f"{name}]" if rest == "" or (rest.startswith(":") and rest[1:].isdigit()) else ""
    name, _, port = header.partition(":")
    return name if port == "" or port.isdigit() else ""


class HostCheck:
    """Refuses a request whose Host header names no allowed host (a 400). It reads the header itself, so that no
    Starlette version decides: some split ``[::1]:8765`` on its first colon and refused every IPv6 request."""

    def __init__(self, app, allowed: list[str]):
        self.app, self.allowed = app, set(allowed)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket") and host_name(Headers(scope=scope).get("host", "")) not in self.allowed:
            await PlainTextResponse("Invalid host header", status_code=400)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def allowed_hosts(host: str, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The names a request's Host may carry: this machine's loopback names, the address the server is bound to
    (a wildcard such as 0.0.0.0 is no name a browser sends), and the names given with --allow-host. Never "*":
    a page on another site that rebinds its name to this address is refused whatever --host is."""
    names = [*LOOPBACK_NAMES, *([] if host.strip() in WILDCARDS else [host]), *extra]
    for name in extra:
        if not name.strip() or "*" in name or "/" in name:
            raise InputError(f"--allow-host {name!r} is not a host name; give the name or address clients use, e.g. --allow-host myhost.lan.")
    return list(dict.fromkeys(_as_host_header(n) for n in names))


def serve(service: Service, host: str = "127.0.0.1", port: int = 8765, on_ready=None,
          allow_hosts: list[str] | tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """Serve until Ctrl-C (or SIGTERM); a run still going is stopped at its next event and stays resumable.
    Returns the runs so stopped, as (id, kind)."""
    import uvicorn

    app = build(service, allowed_hosts(host, allow_hosts))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3,
                            lifespan="off")
    server = uvicorn.Server(config)
    if on_ready:
        original = server.startup

        async def startup(sockets=None):
            await original(sockets)
            bound = [s.getsockname() for srv in server.servers for s in srv.sockets]
            on_ready(bound[0][1] if bound else port)
        server.startup = startup
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn raises the signal again once it has shut down: the way to stop it
        pass
    finally:
        service.close()
    return [(job.id, job.kind) for job in service.queue.jobs.values() if job.state == "interrupted" and job.kind != "replay"]
