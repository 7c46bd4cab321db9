"""Where agents and people work: the MCP server on stdio and the local web page."""

from __future__ import annotations

import click

from localpanel.cli.common import CliState, errors_to_sentences, pass_ctx
from localpanel.engine.runtime import RuntimeSettings
from localpanel.weights.store import Store

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@click.command("mcp")
@click.option("--threads", type=click.IntRange(1), help="CPU threads for llama.cpp (default: the CPUs this process may use).")
@pass_ctx
@errors_to_sentences
def mcp_command(ctx: CliState, threads: int | None) -> None:
    """Serve localpanel to agents over MCP, on stdin and stdout.

    \b
    Tools: start_run (returns a run id at once), wait_run (waits at most N seconds,
    with progress notifications), show_run, list_runs, list_models, resume_run,
    replay_run. Each finished run's card is the resource
    localpanel://runs/RUN_ID/card.md (and card.json). Runs queue one at a time on
    this machine. An MCP client starts it itself; see the README for the snippet.
    """
    from localpanel.serve.mcp_server import serve_stdio
    from localpanel.serve.service import Service

    serve_stdio(Service(Store(), RuntimeSettings(threads=threads), ctx.models_file))


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on. Anything but this machine's loopback exposes every run to the network, with no login.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port to listen on (0: any free port).")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME", help="Also answer requests addressed to this host name (repeat): the name other machines use to reach this one. Loopback names and the --host address are always allowed; no wildcard is.")
@click.option("--threads", type=click.IntRange(1), help="CPU threads for llama.cpp (default: the CPUs this process may use).")
@pass_ctx
@errors_to_sentences
def serve(ctx: CliState, host: str, port: int, allow_hosts: tuple[str, ...], threads: int | None) -> None:
    """A local web page: start polls and debates, watch ballots land live, read, resume and replay past runs.

    Runs started there are ordinary run directories (`show`, `replay`, `--resume` work on them) and queue one at
    a time on this machine. Closing the browser does not stop a run; Ctrl-C stops the server and leaves a run
    that was going resumable.
    """
    from localpanel.serve.service import Service
    from localpanel.serve.web import WILDCARDS, allowed_hosts
    from localpanel.serve.web import serve as serve_web

    names = allowed_hosts(host, allow_hosts)  # a bad --allow-host is refused before anything starts
    if host not in LOOPBACK:
        click.echo(f"Warning: listening on {host}: anyone who can reach this port can start runs and read every run; "
                   f"there is no login. Requests are answered when addressed to: {', '.join(names)}"
                   + (" (add the name others use with --allow-host)" if host in WILDCARDS else "") + ".", err=True)
    shown = f"[{host}]" if ":" in host else host

    def ready(bound: int) -> None:
        click.echo(f"localpanel is at http://{shown}:{bound}/ (Ctrl-C stops it; a run going on stays resumable)", err=True)

    stopped = serve_web(Service(Store(), RuntimeSettings(threads=threads), ctx.models_file), host, port, on_ready=ready,
                        allow_hosts=allow_hosts)
    click.echo("Stopped.", err=True)
    for run_id, kind in stopped:
        click.echo(f"Run {run_id} was stopped and is saved; finish it from the page, or with: localpanel {kind} --resume {run_id}", err=True)
