"""Real debates on the tiny panel: rounds that reuse the KV cache, kill -9 and resume, replay."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from localpanel import api
from localpanel.panel.protocol import DebateSettings
from localpanel.runs.rundir import RunDir

pytestmark = pytest.mark.real

QUESTION = "Is distilling a closed model's outputs ethical?"
OPTIONS = ["Yes", "No", "It depends"]


def test_three_round_debate_reuses_the_cache_and_replays_identically(store_with_weights, registry):
    store = store_with_weights
    t = api.start_run(QUESTION, OPTIONS, registry=registry, store=store, panel="tiny",
                      settings=DebateSettings(rounds=3, seed=5, early_stop=False), run_dir=store.runs_dir / "three")
    assert t.kind == "debate" and len(t.rounds) == 3 and t.stopped_because == "max_rounds"
    assert all(len(r.turns) == 4 and all(x.failure is None for x in r.turns) for r in t.rounds)
    for r in t.rounds[1:]:
        for turn in r.turns:
            before = next(x for x in t.rounds[r.number - 2].turns if x.participant == turn.participant)
            processed = before.prompt_tokens + before.completion_tokens
            assert turn.cached_tokens >= 0.9 * processed, (turn.participant, turn.cached_tokens, processed)
            assert turn.attribution_confidence is not None
            if turn.vote == before.vote:
                assert turn.attributed_to is None  # only a changed vote can be credited to someone
    # Derived figures agree with the ballots they come from.
    for name, votes in t.vote_matrix.items():
        changes = sum(1 for a, b in zip(votes, votes[1:]) if a and b and a != b)
        assert changes == sum(1 for p in t.turning_points if p.participant == name)
    assert t.summary and t.summary.startswith(t.moderator.facts)
    for option, arg in t.strongest_arguments.items():
        assert any(x.rationale == arg.text and x.vote == option for r in t.rounds for x in r.turns)
    for p in t.turning_points:  # every change of mind is in the summary, as it happened
        assert f"In round {p.round}, {p.participant} moved from {p.from_vote} to {p.to_vote}" in t.summary
    lines = RunDir(store.runs_dir / "three").journal_path.read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["turn"] * 12 + ["moderator"]

    # Debiased (the default): every vote was scored under each rotation of the three options.
    assert t.settings.debias and all(x.raw_confidence and set(x.raw_confidence) == set(OPTIONS) for r in t.rounds for x in r.turns)
    assert t.positions is not None and t.positions.debiased == 12

    report = api.replay(store.runs_dir / "three", store=store)
    assert report.identical and report.turns_compared == 12, report.divergence
    assert report.environment_differences == {}


def test_the_typing_order_changes_no_ballot_no_summary_and_no_result(store_with_weights, registry):
    """Real weights: the same debate with its options typed in another order is the same debate, to the token."""
    runs = []
    for k, options in enumerate((["Yes", "No", "It depends"], ["It depends", "Yes", "No"])):
        runs.append(api.start_run(QUESTION, options, registry=registry, store=store_with_weights, panel="tiny",
                                  settings=DebateSettings(rounds=2, seed=7, early_stop=False),
                                  run_dir=store_with_weights.runs_dir / f"order-{k}"))
    turns = [[(x.participant, x.round, x.tokens, x.vote, x.confidence, x.raw_confidence, x.option_order, x.attributed_to)
              for r in t.rounds for x in r.turns] for t in runs]
    assert turns[0] == turns[1]
    assert len({x[6][0] for x in turns[0] if x[1] == 1}) == 3  # round 1 showed each option first to some seat
    assert runs[0].moderator.text == runs[1].moderator.text and runs[0].summary == runs[1].summary is not None
    assert runs[0].result.counts == runs[1].result.counts and runs[0].result.label == runs[1].result.label
    assert runs[0].options == ["Yes", "No", "It depends"] and runs[1].options == ["It depends", "Yes", "No"]


def cli(*args, home):
    env = {**os.environ, "LOCALPANEL_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    return [sys.executable, "-m", "localpanel", *args], env


def kill_9_after(cmd, env, journal, lines: int) -> bytes:
    """Start ``cmd``, kill -9 it once ``journal`` holds ``lines`` lines; the whole lines it kept."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_bytes().count(b"\n") >= lines:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = journal.read_bytes()
    return before[: before.rfind(b"\n") + 1]


def test_kill_9_mid_debate_then_resume_changes_no_journaled_turn(store_with_weights, tmp_path):
    run_dir = tmp_path / "ethics"
    cmd, env = cli("debate", QUESTION, *[a for o in OPTIONS for a in ("-o", o)], "--rounds", "3", "--seed", "9", "--panel", "tiny",
                   "--no-early-stop", "--run-dir", str(run_dir), "-q", home=store_with_weights.home)
    journal = run_dir / "turns.jsonl"
    kept = kill_9_after(cmd, env, journal, 6)
    assert 6 <= kept.count(b"\n") < 12 and not (run_dir / "transcript.json").exists()

    cmd, env = cli("debate", "--resume", str(run_dir), "--json", "-q", home=store_with_weights.home)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    after = journal.read_bytes()
    assert after.startswith(kept)
    data = json.loads(done.stdout)
    assert sum(len(r["turns"]) for r in data["rounds"]) == 12 and data["summary"]
    resumed = [json.loads(line) for line in after.splitlines()[kept.count(b"\n"):]]
    assert any(turn.get("rebuild_seconds", 0) > 0 for turn in resumed if turn["kind"] == "turn")

    # The resumed run is the run an uninterrupted one would have been: replay runs it straight through.
    cmd, env = cli("replay", str(run_dir), "--json", "-q", home=store_with_weights.home)
    replayed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    report = json.loads(replayed.stdout)
    assert replayed.returncode == 0 and report["identical"] and report["turns_compared"] == 12, report

    shown = subprocess.run(cli("debate", "--resume", str(run_dir), "-q", home=store_with_weights.home)[0],
                           env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "had already finished; showing it" in shown.stderr

    # ... and the same ballots as the same debate run straight through (the copy guard on, as by default)
    straight = tmp_path / "straight"
    cmd, env = cli("debate", QUESTION, *[a for o in OPTIONS for a in ("-o", o)], "--rounds", "3", "--seed", "9", "--panel", "tiny",
                   "--no-early-stop", "--run-dir", str(straight), "-q", home=store_with_weights.home)
    assert subprocess.run(cmd, env=env, capture_output=True, timeout=300).returncode == 0
    assert json.loads((straight / "manifest.json").read_text())["settings"]["copy_guard"] == 8

    def ballots(d):
        turns = [json.loads(line) for line in (d / "turns.jsonl").read_text().splitlines()]
        return sorted((t["round"], t["participant"], t["tokens"]) for t in turns if t["kind"] == "turn")

    assert ballots(run_dir) == ballots(straight)


def test_max_memory_unloads_models_and_changes_no_ballot(store_with_weights, registry):
    store = store_with_weights
    settings = DebateSettings(rounds=2, seed=3, early_stop=False)
    from localpanel.engine.llama import LlamaBackend
    from localpanel.engine.runtime import RuntimeSettings

    results = {}
    for label, limit in (("free", None), ("bounded", 300_000_000)):  # both models are 351 MB: one at a time
        with LlamaBackend(RuntimeSettings(max_memory=limit)) as backend:
            t = api.start_run(QUESTION, OPTIONS, registry=registry, store=store, settings=settings, backend=backend, panel="tiny",
                              run_dir=store.runs_dir / label, with_moderator=False)
            results[label] = (t, backend.model_loads)
    (free, free_loads), (bounded, bounded_loads) = results["free"], results["bounded"]
    assert free_loads == 2 and bounded_loads >= 3
    assert [x.text for r in bounded.rounds for x in r.turns] == [x.text for r in free.rounds for x in r.turns]
    assert any(x.rebuild_seconds > 0 for r in bounded.rounds for x in r.turns)


def test_interrupted_inside_a_batch_resumes_to_the_uninterrupted_run(store_with_weights, registry):
    """Ctrl-C right after one seat of a pair that decodes together is journaled, while its partner is still
    decoding: the resumed run decodes the journaled turn again, forced, beside the partner, so that the
    partner's batch is composed as it was, and every ballot equals the uninterrupted run's."""
    from localpanel.engine.llama import LlamaBackend
    from localpanel.engine.runtime import RuntimeSettings

    store = store_with_weights
    settings = DebateSettings(rounds=2, seed=4, early_stop=False)

    class CtrlC(LlamaBackend):
        finished = 0
        widths: set = set()

        def generate_many(self, requests, on_token=None, on_done=None):
            def done(i, g):
                on_done(i, g)
                CtrlC.finished += 1
                if CtrlC.finished == 5:  # round 2's first finished ballot: its partner is mid-ballot
                    raise KeyboardInterrupt
            return super().generate_many(requests, on_token, done)

    with LlamaBackend(RuntimeSettings()) as backend:
        whole = api.start_run(QUESTION, OPTIONS, registry=registry, store=store, settings=settings, backend=backend,
                              panel="tiny", run_dir=store.runs_dir / "whole", with_moderator=False)
        batches = {w: row[:2] for w, row in backend.stats.by_width.items()}  # width -> [llama_decode calls, tokens]
        assert batches[2][0] > 0  # two seats per model: they shared llama_decode calls
    with CtrlC(RuntimeSettings()) as backend, pytest.raises(KeyboardInterrupt):
        api.start_run(QUESTION, OPTIONS, registry=registry, store=store, settings=settings, backend=backend,
                      panel="tiny", run_dir=store.runs_dir / "cut", with_moderator=False)
    journal = RunDir(store.runs_dir / "cut").journal_path.read_text().splitlines()
    assert len(journal) == 5
    with LlamaBackend(RuntimeSettings()) as backend:
        resumed = api.resume(store.runs_dir / "cut", store=store, backend=backend)
        # Round 1 rebuilt, and round 2 with the journaled turn forced beside its partner: the very same batches.
        assert {w: row[:2] for w, row in backend.stats.by_width.items()} == batches
    assert [(x.participant, x.text) for r in resumed.rounds for x in r.turns] == \
           [(x.participant, x.text) for r in whole.rounds for x in r.turns]


def test_one_at_a_time_is_kept_as_a_setting_and_replays(store_with_weights, registry):
    from localpanel.engine.llama import LlamaBackend
    from localpanel.engine.runtime import RuntimeSettings

    store = store_with_weights
    runtime = RuntimeSettings(batch_sequences=False)
    with LlamaBackend(runtime) as backend:
        t = api.start_run(QUESTION, OPTIONS, registry=registry, store=store, backend=backend, panel="tiny", runtime=runtime,
                          settings=DebateSettings(rounds=2, seed=2, early_stop=False), run_dir=store.runs_dir / "alone")
        assert set(backend.stats.by_width) == {1}
    assert RunDir(store.runs_dir / "alone").manifest().runtime.batch_sequences is False
    report = api.replay(store.runs_dir / "alone", store=store)
    assert report.identical and report.turns_compared == 8, report.divergence
