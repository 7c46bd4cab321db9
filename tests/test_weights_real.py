"""Calibrated weights on the real tiny panel: calibrate on two ARC-style questions, score others with the
weights, poll with them, and replay the poll identically (the weights change the count, never a ballot)."""

import json

import pytest
from click.testing import CliRunner

from localpanel import api
from localpanel.cli import cli

pytestmark = pytest.mark.real


def rows(prefix, questions):
    return "".join(json.dumps({"id": f"{prefix}{k}", "question": q, "options": o, "answer": a}) + "\n"
                   for k, (q, o, a) in enumerate(questions))


def test_calibrate_eval_and_poll_with_weights_on_real_weights(store_with_weights, tmp_path):
    held = tmp_path / "held.jsonl"
    held.write_text(rows("h", [("Which is a mammal?", ["Shark", "Whale", "Trout"], "Whale"),
                               ("What melts ice fastest?", ["Salt", "Sand", "Sugar"], "Salt")]))
    scored = tmp_path / "scored.jsonl"
    scored.write_text(rows("s", [("Which planet is closest to the Sun?", ["Mercury", "Mars", "Venus"], "Mercury")]))
    run = CliRunner().invoke(cli, ["calibrate", str(held), "--panel", "tiny", "-q"])
    assert run.exit_code == 0, run.output
    weights = json.loads((store_with_weights.home / "weights" / "tiny.json").read_text())
    assert set(weights["models"]) == {"smollm2-135m", "gemma3-270m"} and all(m["n"] == 4 for m in weights["models"].values())
    ev = CliRunner().invoke(cli, ["eval", str(scored), "--panel", "tiny", "--rounds", "1", "--weights", "tiny", "--json", "-q"])
    assert ev.exit_code == 0, ev.output
    assert {"calibrated vote", "calibrated weighted"} <= set(json.loads(ev.output)["modes"])
    assert CliRunner().invoke(cli, ["eval", str(held), "--panel", "tiny", "--weights", "tiny", "-q"]).exit_code == 2
    poll = CliRunner().invoke(cli, ["poll", "Is tea better than coffee?", "--panel", "tiny", "--weights", "tiny",
                                    "--no-moderator", "--json", "-q"])
    assert poll.exit_code == 0, poll.output
    t = json.loads(poll.output)
    assert t["weighted_count"]["source"] == str(held) and t["settings"]["seat_weights"] == {
        m: w["weight"] for m, w in weights["models"].items()}
    report = api.replay(t["id"], store=store_with_weights)
    assert report.identical and report.turns_compared == 4, report.divergence
