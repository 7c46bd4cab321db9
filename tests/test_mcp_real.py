"""A real MCP client (the SDK's stdio client) spawns `localpanel mcp` and runs a poll on the real tiny panel."""

import os
import sys
from pathlib import Path

import anyio
import mcp.types as types
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

pytestmark = pytest.mark.real

LOCALPANEL = str(Path(sys.executable).with_name("localpanel"))


def server(home: Path) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALPANEL_")}
    env.update(LOCALPANEL_HOME=str(home), HF_HUB_OFFLINE="1")
    return StdioServerParameters(command=LOCALPANEL, args=["mcp", "--threads", "2"], env=env)


def text(result) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


def test_an_agent_polls_the_tiny_panel_through_a_real_mcp_session(store_with_weights):
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done, total, message):
        progress.append((done, total, message))

    async def session_run():
        async with stdio_client(server(store_with_weights.home)) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = {t.name for t in (await session.list_tools()).tools}
                assert {"start_run", "wait_run", "show_run", "list_runs", "list_models", "resume_run", "replay_run"} <= tools

                catalog = (await session.call_tool("list_models", {})).structured_content
                assert any(p["name"] == "tiny" and p["ready"] for p in catalog["panels"])

                bad = await session.call_tool("start_run", {"question": "Is it?", "options": ["Only one"]})
                assert bad.is_error and "at least 2 options" in text(bad) and "\n" not in text(bad).strip()
                unknown = await session.call_tool("start_run", {"question": "Is it?", "panel": "no-such-panel"})
                assert unknown.is_error and "Unknown panel 'no-such-panel'" in text(unknown)

                started = await session.call_tool("start_run", {"question": "Is a local model worth it?", "panel": "tiny", "seed": 3})
                assert not started.is_error, text(started)
                run_id = started.structured_content["run_id"]
                state = None
                for _ in range(20):
                    waited = await session.call_tool("wait_run", {"run_id": run_id, "seconds": 30}, progress_callback=on_progress)
                    assert not waited.is_error, text(waited)
                    state = waited.structured_content
                    if state["state"] == "finished":
                        break
                assert state["state"] == "finished", state
                assert len(state["ballots"]) == 4 and state["result"]["line"]

                card = await session.read_resource(f"localpanel://runs/{run_id}/card.md")
                body = card.contents[0].text
                assert "Is a local model worth it?" in body and state["result"]["line"].split(" (")[0] in body
                shown = await session.call_tool("show_run", {"run_id": run_id, "format": "json"})
                assert '"question": "Is a local model worth it?"' in text(shown)
                missing = await session.call_tool("show_run", {"run_id": "no-such-run"})
                assert missing.is_error and "No run" in text(missing)
                return run_id

    run_id = anyio.run(session_run)
    # Progress came as ballots landed, and the run is an ordinary run directory.
    assert progress and progress[-1][0] <= 4 and all(total == 4 for _, total, _ in progress)
    assert (store_with_weights.runs_dir / run_id / "transcript.json").is_file()
