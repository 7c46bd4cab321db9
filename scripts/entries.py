"""How long one poll takes through each entry: the CLI, the MCP server (a real stdio client) and the web page
(real HTTP), each a fresh process on the same question, panel and seed, one after the other, in one run.

Each figure is the wall time from the command (or the tool call, or the POST) to the finished result, and the
whole including the server's start. The ballots must be the same through all three. Prints a table, or JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from localpanel.weights.store import Store

LOCALPANEL = str(Path(sys.executable).with_name("localpanel"))
QUESTION = "Is a local model worth it for private notes?"


def env_for(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALPANEL_")}
    env.update(LOCALPANEL_HOME=str(home), HF_HUB_OFFLINE="1")
    return env


def fresh_home(root: Path, name: str) -> Path:
    home = root / name
    home.mkdir()
    (home / "models").symlink_to(Store().models_dir, target_is_directory=True)
    return home


def votes(transcript: dict) -> list:
    return [(t["participant"], t["vote"], t["text"]) for r in transcript["rounds"] for t in r["turns"]]


def via_cli(home: Path, panel: str, seed: int) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run([LOCALPANEL, "poll", QUESTION, "--panel", panel, "--seed", str(seed), "--json", "-q"],
                         env=env_for(home), capture_output=True, text=True, check=True)
    took = time.perf_counter() - t0
    return {"entry": "cli", "seconds": took, "total_seconds": took, "votes": votes(json.loads(out.stdout))}


def via_mcp(home: Path, panel: str, seed: int) -> dict:
    async def go():
        t0 = time.perf_counter()
        params = StdioServerParameters(command=LOCALPANEL, args=["mcp"], env=env_for(home))
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                t1 = time.perf_counter()
                started = await session.call_tool("start_run", {"question": QUESTION, "panel": panel, "seed": seed})
                run_id = started.structured_content["run_id"]
                while True:
                    state = (await session.call_tool("wait_run", {"run_id": run_id, "seconds": 60})).structured_content
                    if state["state"] != "running" and state["state"] != "queued":
                        break
                t2 = time.perf_counter()
                card = await session.call_tool("show_run", {"run_id": run_id, "format": "json"})
                transcript = json.loads(card.content[0].text)
        return {"entry": "mcp", "seconds": t2 - t1, "total_seconds": t2 - t0, "votes": votes(transcript)}

    return anyio.run(go)


def via_web(home: Path, panel: str, seed: int) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    server = subprocess.Popen([LOCALPANEL, "serve", "--port", str(port)], env=env_for(home),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while "localpanel is at" not in server.stderr.readline():
            pass
        base = f"http://127.0.0.1:{port}"
        t1 = time.perf_counter()
        req = urllib.request.Request(f"{base}/api/runs", json.dumps({"question": QUESTION, "panel": panel, "seed": seed}).encode(),
                                     {"Content-Type": "application/json"})
        run_id = json.loads(urllib.request.urlopen(req).read())["run_id"]
        with urllib.request.urlopen(f"{base}/api/runs/{run_id}/events") as stream:  # until the stream ends
            stream.read()
        t2 = time.perf_counter()
        transcript = json.loads((home / "runs" / run_id / "transcript.json").read_text())
    finally:
        server.terminate()
        server.wait(30)
    return {"entry": "web", "seconds": t2 - t1, "total_seconds": t2 - t0, "votes": votes(transcript)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--panel", default="tiny")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for name, fn in (("cli", via_cli), ("mcp", via_mcp), ("web", via_web)):
            rows.append(fn(fresh_home(Path(root), name), a.panel, a.seed))
    same = all(r["votes"] == rows[0]["votes"] for r in rows)
    if a.json:
        print(json.dumps({"panel": a.panel, "seed": a.seed, "same_ballots": same,
                          "entries": [{k: round(v, 2) if isinstance(v, float) else v for k, v in r.items() if k != "votes"} for r in rows]}, indent=2))
        return
    print(f"One poll on the {a.panel} panel (seed {a.seed}), through each entry, fresh process each:")
    print(f"{'entry':<6} {'run (s)':>8} {'with start-up (s)':>18}")
    for r in rows:
        print(f"{r['entry']:<6} {r['seconds']:>8.1f} {r['total_seconds']:>18.1f}")
    print("same ballots through all three:", "yes" if same else "NO")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
