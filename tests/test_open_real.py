"""Open questions on real weights (the tiny panel): proposals under the phrase rule, merged candidates, valid
ballots over them, replay to the token, and kill -9 during the proposals, then resume."""

import json
import subprocess

import pytest

from localpanel import api
from localpanel.api.request import RunRequest
from localpanel.engine.freetext import PHRASE_WORDS, ends_phrase
from localpanel.panel.proposals import merge
from localpanel.panel.protocol import DebateSettings

from .test_debate_real import cli, kill_9_after

pytestmark = pytest.mark.real

QUESTION = "What is the capital of Australia?"


def test_an_open_debate_votes_valid_ballots_over_its_merged_proposals_and_replays_identically(store_with_weights, registry):
    store = store_with_weights
    run_dir = store.runs_dir / "open"
    t = api.run(RunRequest(question=QUESTION, kind="open", panel="tiny", run_dir=run_dir,
                           settings=DebateSettings(rounds=2, seed=3, early_stop=False)), registry=registry, store=store)
    assert len(t.proposals) == 4 and all(p.round == 0 for p in t.proposals)
    for p in t.proposals:  # one finished phrase on one line, or a failure said
        assert p.failure or (ends_phrase(p.vote.encode()) and p.vote.count(" ") < PHRASE_WORDS and "\n" not in p.vote)
    assert t.merge is not None and t.merge == merge(t.proposals) and t.options == t.merge.options
    assert sorted(s for c in t.merge.candidates for s in c.seats) == sorted(p.participant for p in t.proposals if p.valid)
    assert len(t.rounds) == 2 and all(x.valid and x.vote in t.options for r in t.rounds for x in r.turns)
    if len(t.options) > 1:  # debiased over the candidates as over options
        assert all(set(x.raw_confidence) == set(t.options) for r in t.rounds for x in r.turns)
    assert t.summary
    report = api.replay(run_dir, store=store)
    assert report.identical and report.turns_compared == 12, report.divergence


def test_kill_9_during_the_proposals_then_resume_loses_nothing(store_with_weights, tmp_path):
    run_dir = tmp_path / "open"
    args = ("poll", "--open", QUESTION, "--seed", "11", "--panel", "tiny", "--no-moderator")
    cmd, env = cli(*args, "--run-dir", str(run_dir), "-q", home=store_with_weights.home)
    journal = run_dir / "turns.jsonl"
    kept = kill_9_after(cmd, env, journal, 1)
    lines = [json.loads(x) for x in kept.splitlines()]
    assert lines and all(x["round"] == 0 for x in lines[:1])

    cmd, env = cli("poll", "--resume", str(run_dir), "--json", "-q", home=store_with_weights.home)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert journal.read_bytes().startswith(kept)
    resumed = json.loads(done.stdout)

    straight = tmp_path / "straight"
    cmd, env = cli(*args, "--run-dir", str(straight), "--json", "-q", home=store_with_weights.home)
    whole = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    whole = json.loads(whole.stdout)
    assert [p["text"] for p in resumed["proposals"]] == [p["text"] for p in whole["proposals"]]
    assert resumed["merge"] == whole["merge"]
    assert [[x["text"] for x in r["turns"]] for r in resumed["rounds"]] == [[x["text"] for x in r["turns"]] for r in whole["rounds"]]


def test_a_context_file_is_read_by_real_seats_hashed_and_checked_on_replay(store_with_weights, registry, tmp_path):
    from localpanel.errors import RunError

    doc = tmp_path / "notes.txt"
    doc.write_text("Canberra was chosen as the capital of Australia in 1908, as a compromise between Sydney and "
                   "Melbourne.\n")
    run_dir = tmp_path / "ctx"
    t = api.run(RunRequest(question="Which city is the capital of Australia?", kind="open", panel="tiny",
                           run_dir=run_dir, context=[doc], moderator=False, settings=DebateSettings(seed=2)),
                registry=registry, store=store_with_weights)
    (d,) = t.documents
    assert d.read == d.chars and d.size == doc.stat().st_size
    assert all(p.valid for p in t.proposals) and all(x.valid for x in t.rounds[0].turns)
    assert api.replay(run_dir, store=store_with_weights).identical
    doc.write_text(doc.read_text().replace("1908", "1913"))
    with pytest.raises(RunError, match="notes.txt has changed"):
        api.replay(run_dir, store=store_with_weights)
