"""The real-size default panel end to end (Qwen2.5-Coder 1.5B and 0.5B): a poll as `scripts/run` makes it.

Marked `realsize` (about a minute on 2 cores): deselect with -m "not realsize".
"""

import json

import pytest
from click.testing import CliRunner

from localpanel.cli import cli
from localpanel.engine.freetext import ends_sentence

pytestmark = [pytest.mark.real, pytest.mark.realsize]

QUESTION = "Is it hypocrisy that AI labs complain about distillation while training their own models on unlicensed content?"


@pytest.fixture
def store_with_real_size_weights(real_size_store, isolated):
    isolated.mkdir(parents=True, exist_ok=True)
    (isolated / "models").symlink_to(real_size_store.models_dir, target_is_directory=True)
    return isolated


def test_real_size_poll_end_to_end(store_with_real_size_weights):
    result = CliRunner().invoke(cli, ["poll", QUESTION, "-o", "Yes", "-o", "No", "--json", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    t = json.loads(result.stdout)
    assert t["panel"] == "default"
    assert {p["model"] for p in t["participants"]} == {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"}
    turns = t["rounds"][0]["turns"]
    assert all(x["failure"] is None and x["vote"] in ("Yes", "No") for x in turns), [x["failure"] for x in turns]
    for x in turns:  # finished prose: at a sentence end, long enough to be an argument
        assert ends_sentence(x["rationale"].encode()) and len(x["rationale"]) >= 40, x["rationale"]
        assert abs(sum(x["confidence"].values()) - 1) < 1e-4
    # The summary's facts are the tally's, and each option's case was written from that option's rationales only.
    report = t["moderator"]
    counts = t["result"]["counts"]
    assert t["summary"].startswith(report["facts"])
    winner = max(counts, key=counts.get)
    if counts[winner] == 4:
        assert report["facts"] == f"All 4 panelists voted {winner}."
    else:
        assert f"{counts[winner]} voted" in report["facts"] or f"{counts[winner]} of 4 panelists voted {winner}" in report["facts"]
    by_vote = {o: {x["rationale"] for x in turns if x["vote"] == o} for o in ("Yes", "No")}
    # Most-held case first, ties by name: never the typed order.
    held = sorted((o for o in ("Yes", "No") if by_vote[o]), key=lambda o: (-counts[o], o))
    assert [p["option"] for p in report["passages"]] == held
    for p in report["passages"]:
        assert p["failure"] is None and p["text"] and ends_sentence(p["text"].encode())
        assert p["strongest"]["text"] in by_vote[p["option"]] and p["strongest"]["vote"] == p["option"]
        assert p["by_model"] == (len(by_vote[p["option"]]) > 1)
