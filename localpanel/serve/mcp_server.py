"""`localpanel mcp`: a stdio MCP server (official Python SDK) over the service, for agents.

Start-then-wait, because a local debate outlasts a client's tool timeout: ``start_run`` checks the arguments,
claims the run and returns its id within seconds; ``wait_run`` waits at most N seconds and returns the state,
the ballots so far and, once finished, the result, sending progress notifications while it waits when the
client gave a progress token. Runs queue one at a time on the machine, and say so. Each finished run's card
is a resource at ``localpanel://runs/{run_id}/card.md`` (and ``card.json``).
"""

from __future__ import annotations

from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError

from localpanel.errors import LocalpanelError
from localpanel.serve.service import Service, sentence

INSTRUCTIONS = (
    "localpanel runs polls and debates between open-weight LLMs on this machine, from weights pinned by sha256. "
    "Call start_run, then wait_run with the run id until its state is finished (each call waits at most the "
    "seconds you give). Runs take about a minute at real size and queue one at a time. Read the card with "
    "show_run or the resource localpanel://runs/{run_id}/card.md."
)
MAX_WAIT = 300.0


async def _call(fn, *args, **kwargs):
    """A service call on a worker thread, its errors as tool errors of one sentence."""
    try:
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))
    except LocalpanelError as exc:
        raise ToolError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - the server never crashes on a call
        raise ToolError(sentence(exc)) from None


def _progress_line(event: dict) -> str:
    where = f"round {event['round']}/{event['rounds']} · " if event.get("rounds", 1) > 1 else ""
    if event.get("failure"):
        return f"{where}{event['participant']}'s ballot failed: {event['failure']}"
    return f"{where}{event['participant']} voted {event['vote']}"


def build(service: Service) -> MCPServer:
    mcp = MCPServer(name="localpanel", instructions=INSTRUCTIONS)

    @mcp.tool()
    async def start_run(question: str, options: list[str] | None = None, panel: str | None = None,
                        models: list[str] | None = None, rounds: int = 1, seed: int | None = None,
                        integer: bool = False, open: bool = False, context: list[str] | None = None) -> dict[str, Any]:
        """Start a poll (rounds=1) or a debate (rounds>1) and return its run id at once; then call wait_run.

        options: the choices (default Yes and No); integer=true asks for a whole number instead; open=true has
        each seat propose a short answer, merged into the candidates the panel votes among; context: paths of
        text files on this machine that every seat reads before the question. panel: a panel
        name from list_models (default: the default panel); models: seat these models instead, one seat per
        name. seed: the run's seed (the same seed and weights give the same ballots)."""
        job = await _call(service.start, question, options, panel=panel, models=models, rounds=rounds, seed=seed,
                          integer=integer, open=open, context=context)
        snap = await _call(service.snapshot, job.id)
        queued = snap["state"] == "queued"
        return {"run_id": job.id, "state": snap["state"], "queue_position": snap.get("queue_position", 0),
                "message": (f"Queued behind {snap['queue_position']} run(s): one run at a time on this machine."
                            if queued else "Running.") + f" Call wait_run with run_id {job.id!r}."}

    @mcp.tool()
    async def wait_run(run_id: str, seconds: float = 30.0, ctx: Context | None = None) -> dict[str, Any]:
        """Wait at most `seconds` (up to 300) for a run, a resume or a replay; return its state (queued,
        running, finished, interrupted, failed), the ballots so far, and the result once finished. Call again
        until the state is finished. Sends progress notifications (ballots done of all) while waiting."""
        seconds = max(0.0, min(float(seconds), MAX_WAIT))
        snap = await _call(service.snapshot, run_id)
        job = service.job(snap["run_id"]) or service.job(run_id)
        total = len(snap.get("participants", [])) * snap.get("rounds", 1) or None
        reported = -1
        deadline = anyio.current_time() + seconds
        while job is not None and not job.done:
            ballots = [e for e in service.events(job.id) if e["type"] == "ballot"]
            if ctx is not None and len(ballots) != reported:
                reported = len(ballots)
                message = _progress_line(ballots[-1]) if ballots else f"{job.state}"
                await ctx.report_progress(progress=len(ballots), total=total, message=message)
            left = deadline - anyio.current_time()
            if left <= 0:
                break
            seen = len(job.log.events)
            await anyio.to_thread.run_sync(job.log.wait, seen, min(left, 1.0))
        final = await _call(service.snapshot, snap["run_id"] if job is None or job.kind != "replay" else job.id)
        if ctx is not None and len(final.get("ballots", [])) != reported:
            ballots = final.get("ballots", [])
            await ctx.report_progress(progress=len(ballots), total=total,
                                      message=_progress_line(ballots[-1]) if ballots else final["state"])
        return final

    @mcp.tool()
    async def show_run(run_id: str, format: str = "markdown") -> str:
        """A finished run's card: markdown (default) or json (every ballot, probability and figure)."""
        return await _call(service.card, run_id, format)

    @mcp.tool()
    async def list_runs(search: str = "", limit: int = 20) -> list[dict[str, Any]]:
        """Saved runs, newest first, with their result line; `search` keeps those whose question or result
        holds every word given."""
        return (await _call(service.runs, search))[: max(1, min(limit, 200))]

    @mcp.tool()
    async def list_models() -> dict[str, Any]:
        """Panels and models (the shipped ones and those the user added), with whether their weights are here."""
        return await _call(service.catalog)

    @mcp.tool()
    async def resume_run(run_id: str) -> dict[str, Any]:
        """Finish an interrupted run exactly as it was started; then call wait_run."""
        job = await _call(service.resume, run_id)
        return await _call(service.snapshot, job.id)

    @mcp.tool()
    async def replay_run(run_id: str) -> dict[str, Any]:
        """Run every turn of a finished run again from its pinned weights and seeds; returns a job id
        (RUN/replay) to give to wait_run, whose result says identical or where the replay first diverged."""
        job = await _call(service.replay, run_id)
        return {"job_id": job.id, "state": job.state, "message": f"Call wait_run with run_id {job.id!r}."}

    def _card(run_id: str, fmt: str) -> str:
        try:
            return service.card(run_id, fmt)
        except LocalpanelError as exc:
            raise ResourceError(str(exc)) from None

    @mcp.resource("localpanel://runs/{run_id}/card.md", mime_type="text/markdown")
    def card_markdown(run_id: str) -> str:
        """A finished run's card, as Markdown."""
        return _card(run_id, "markdown")

    @mcp.resource("localpanel://runs/{run_id}/card.json", mime_type="application/json")
    def card_json(run_id: str) -> str:
        """A finished run's transcript, as JSON."""
        return _card(run_id, "json")

    return mcp


def serve_stdio(service: Service) -> None:
    """Serve MCP on stdin/stdout until the client closes them. The SDK points file descriptor 1 at stderr while
    it serves, so that llama.cpp's own output never reaches the wire; a run still going when the client leaves
    is stopped at its next event and stays resumable."""
    try:
        build(service).run("stdio")
    finally:
        service.close()
