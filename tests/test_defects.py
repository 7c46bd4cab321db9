"""The defects a careful read of the code found (issue 17): each test fails on the code before its fix."""

import json
import os
import subprocess
import sys
import threading
from datetime import datetime

import pytest
from click.testing import CliRunner

from localpanel import api
from localpanel.cli import cli
from localpanel.engine.freetext import ends_sentence, may_continue_as_number
from localpanel.engine.prompting import ChatTemplate, run_date
from localpanel.engine.runtime import Message, cgroup_cpu_quota, physical_cores, threads_warning, usable_cpus
from localpanel.engine.scripted import Failed, ScriptedBackend
from localpanel.errors import InputError, RunError
from localpanel.eval.results import QuestionResult
from localpanel.eval.scores import majority_score
from localpanel.panel.protocol import DebateSettings
from localpanel.runs.rundir import RunDir

from .test_protocol import NAMES, ballot, env, script  # noqa: F401

# -- saved work ----------------------------------------------------------------------------------------------


def finished_run(env, name="saved", rounds=2):  # noqa: F811
    registry, store = env
    plan = [{n: ballot("Yes" if i % 2 else "No") for i, n in enumerate(NAMES)}, {n: ballot("No") for n in NAMES}][:rounds]
    run_dir = store.runs_dir / name
    api.start_run("Is it?", ["Yes", "No"], registry=registry, store=store, backend=script(ScriptedBackend(), plan),
                  settings=DebateSettings(rounds=rounds, early_stop=False), run_dir=run_dir, with_moderator=False)
    return run_dir


def test_a_bad_line_in_the_middle_of_a_journal_is_refused_and_nothing_is_cut(env):  # noqa: F811
    run_dir = finished_run(env)
    journal = RunDir(run_dir).journal_path
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[2] = b'{"kind": "turn", "participant": "Cy", "brand_new_field": 1}\n'  # another version's turn
    damaged = b"".join(lines)
    journal.write_bytes(damaged)
    (run_dir / "transcript.json").unlink()  # unfinished: a resume would read the journal
    with pytest.raises(RunError, match=rf"{journal} line 3 does not read as a turn .*nothing was changed"):
        api.resume(run_dir, store=env[1], backend=ScriptedBackend())
    assert journal.read_bytes() == damaged  # every later turn is still there


def test_only_the_resuming_process_cuts_a_torn_last_line(env):  # noqa: F811
    run_dir = finished_run(env)
    run = RunDir(run_dir)
    torn = run.journal_path.read_bytes() + b'{"kind": "turn", "partic'
    run.journal_path.write_bytes(torn)
    turns, _ = run.journal()  # a reader leaves it alone
    assert len(turns) == 8 and run.journal_path.read_bytes() == torn
    run.journal(repair=True)
    assert run.journal_path.read_bytes() == torn[: torn.rindex(b"\n") + 1]


def test_a_run_being_written_is_locked_against_a_second_resume_and_replay(env):  # noqa: F811
    run_dir = finished_run(env)
    (run_dir / "transcript.json").unlink()
    holding, release = threading.Event(), threading.Event()

    def writer():
        with RunDir(run_dir).lock():
            holding.set()
            release.wait(10)

    t = threading.Thread(target=writer)
    t.start()
    holding.wait(10)
    try:
        code = ("import sys; from localpanel.runs.rundir import RunDir\n"
                f"with RunDir({str(run_dir)!r}).lock(): pass")
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert "is being written by another localpanel process" in other.stderr
    finally:
        release.set()
        t.join()
    with RunDir(run_dir).lock():  # free again
        pass


def test_replay_of_an_unfinished_run_says_so_and_gives_the_resume_command(env):  # noqa: F811
    run_dir = finished_run(env)
    (run_dir / "transcript.json").unlink()
    before = (run_dir / "turns.jsonl").read_bytes()
    with pytest.raises(InputError, match=rf"is unfinished.*`localpanel debate --resume {run_dir}`"):
        api.replay(run_dir, store=env[1], backend=ScriptedBackend())
    assert (run_dir / "turns.jsonl").read_bytes() == before


def test_a_run_made_by_another_version_is_refused_in_one_sentence(env):  # noqa: F811
    run_dir = finished_run(env)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["environment"]["localpanel"] = "0.0.9"
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunError, match=r"was made by localpanel 0\.0\.9 and this is .*replay it with localpanel 0\.0\.9"):
        api.replay(run_dir, store=env[1], backend=ScriptedBackend())


def test_templates_render_the_runs_date_not_todays(monkeypatch):
    template = ChatTemplate("{{ strftime_now('%d %b %Y') }}|{% for m in messages %}{{ m.content }}{% endfor %}", "", "")
    messages = [Message(role="user", content="hi")]
    monkeypatch.setattr("localpanel.engine.prompting._today", lambda: datetime(2031, 5, 6))
    assert template.render(messages).startswith("06 May 2031|")
    with run_date("2026-11-25T04:13:39Z"):
        assert template.render(messages).startswith("25 Nov 2026|")
    assert template.render(messages).startswith("06 May 2031|")


def test_a_run_keeps_its_date_for_resume_and_replay(env, monkeypatch):  # noqa: F811
    """A run started on one day, resumed on another and replayed on a third: every prompt has the run's date."""
    seen = []
    today = {"now": datetime(2031, 5, 6)}
    monkeypatch.setattr("localpanel.engine.prompting._today", lambda: today["now"])

    class Dated(ScriptedBackend):
        def __init__(self, stop_after=None):
            super().__init__(default=lambda req: ballot("Yes", who=False))
            self.stop_after = stop_after

        def generate(self, request, on_token=None):
            from localpanel.engine.prompting import strftime_now

            if self.stop_after is not None and len(self.requests) >= self.stop_after:
                raise KeyboardInterrupt
            seen.append(strftime_now("%Y-%m-%d"))
            return super().generate(request, on_token)

    registry, store = env
    run_dir = store.runs_dir / "dated"
    with pytest.raises(KeyboardInterrupt):  # interrupted after two of the first round's four ballots
        api.start_run("Is it?", ["Yes", "No"], registry=registry, store=store, backend=Dated(stop_after=2),
                      settings=DebateSettings(rounds=2, early_stop=False), run_dir=run_dir, with_moderator=False)
    created = RunDir(run_dir).manifest().created_at[:10]
    today["now"] = datetime(2032, 7, 8)
    t = api.resume(run_dir, store=store, backend=Dated())
    assert len(t.rounds) == 2 and len(seen) == 2 + 6
    today["now"] = datetime(2033, 9, 10)
    report = api.replay(run_dir, store=store, backend=Dated())
    assert report.identical and report.turns_compared == 8
    assert set(seen) == {created} and len(seen) == 16  # never the day it was resumed or replayed


# -- figures that must be true ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text, ends", [
    (b"The answer is 42.", True), (b"It works (mostly).", True), (b"Really?", True), (b"Wait...", False),
    (b"Use a column store, e.g.", False), (b"Compare DuckDB vs.", False), (b"As argued by Dr.", False),
    (b"Costs rise, i.e.", False), (b"He said \xe2\x80\x9cno.\xe2\x80\x9d", True),
])
def test_sentence_ends_are_not_abbreviations(text, ends):
    assert ends_sentence(text) is ends


@pytest.mark.parametrize("text", [b"episodes he watched on Wednesday is (7 - 1) / 0.", b"Python 3.", b"It costs $2."])
def test_the_decoder_never_closes_a_text_inside_a_number(text):
    assert may_continue_as_number(text)
    assert not may_continue_as_number(b"It costs two dollars.")


def test_a_majority_of_failed_ballots_is_no_right_answer():
    assert majority_score(["Yes", None, None, None], "Yes") == 0.0
    assert majority_score(["Yes", "Yes", None, None], "Yes") == 0.5  # tied with the abstentions
    assert majority_score(["Yes", "Yes", "No", None], "Yes") == 1.0
    q = QuestionResult(index=0, id="q", answer="Yes", votes=[[None, None]], confidence=[{}, {}], tokens=[0], seconds=[0.0])
    assert q.scores()["weighted"] == 0.0  # a question with options whose ballots all failed still counts, as wrong
    integer = QuestionResult(index=0, id="q", answer="4", votes=[["4"]], confidence=[{}], tokens=[0], seconds=[0.0], integer=True)
    assert "weighted" not in integer.scores()


def test_an_integer_question_with_the_moderator_works(env):  # noqa: F811
    registry, store = env
    backend = ScriptedBackend()
    for n, v in zip(NAMES, [42, 42, 41, 42]):
        backend.enqueue(n, {"vote": v, "rationale": f"I computed {v} carefully."})
    backend.enqueue("[moderator]", {"strongest": 1, "case": "Three panelists computed forty-two with care."})
    t = api.start_run("What is 6*7?", [], registry=registry, store=store, backend=backend, integer=True)
    assert t.result.winner == "42" and t.moderator.facts == "3 of 4 panelists voted 42 (supermajority); 1 voted 41."
    assert set(t.strongest_arguments) == {"42", "41"}


def test_a_turn_that_failed_before_writing_keeps_the_conversation_alternating(env):  # noqa: F811
    registry, store = env
    backend = ScriptedBackend()
    script(backend, [{"Ann": Failed("the prompt did not fit"), "Bob": ballot("No"), "Cy": ballot("No"), "Di": ballot("Yes")},
                     {n: ballot("No") for n in NAMES}])
    api.start_run("Is it?", ["Yes", "No"], registry=registry, store=store, backend=backend,
                  settings=DebateSettings(rounds=2, early_stop=False), with_moderator=False)
    for request in backend.requests:
        roles = [m.role for m in request.messages if m.role != "system"]
        assert all(a != b for a, b in zip(roles, roles[1:])), (request.key, roles)
    ann_round_2 = [r for r in backend.requests if r.key == "Ann"][-1]
    assert [m.role for m in ann_round_2.messages] == ["system", "user"]


# -- errors at the edge ----------------------------------------------------------------------------------------


def test_threads_follow_the_affinity_and_the_container_quota(tmp_path, monkeypatch):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(str(tmp_path)) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(str(tmp_path)) is None
    monkeypatch.setattr("localpanel.engine.runtime.cgroup_cpu_quota", lambda root="": 1)
    assert usable_cpus() == 1 and physical_cores() == 1
    assert "more than the 1 CPU this process may use" in threads_warning(4)
    arm = tmp_path / "cpuinfo"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 50.00\n\nprocessor\t: 1\nBogoMIPS\t: 50.00\n\n")
    monkeypatch.setattr("localpanel.engine.runtime.cgroup_cpu_quota", lambda root="": None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert physical_cores(str(arm)) == 2  # ARM names no cores: no halving


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize("extra, flag", [(["Q?"], "a question"), (["--seed", "3"], "--seed"), (["--panel", "tiny"], "--panel")])
def test_resume_refuses_what_would_be_ignored(tmp_path, extra, flag):
    result = invoke("poll", "--resume", str(tmp_path), *extra)
    assert result.exit_code == 2 and f"--resume continues a run exactly as it was started, so it takes no {flag}" in result.output


def test_ctrl_c_in_pull_exits_130_without_a_traceback(monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("localpanel.weights.store.Store.pull", interrupted)
    result = invoke("pull", "smollm2-135m")
    assert result.exit_code == 130 and "Traceback" not in result.output and "Aborted" not in result.output


def test_an_out_file_that_cannot_be_written_is_one_sentence(env, tmp_path):  # noqa: F811
    run_dir = finished_run(env, rounds=1)
    blocked = tmp_path / "no-such-dir" / "card.md"
    (tmp_path / "no-such-dir").write_text("a file, not a directory")
    result = invoke("show", str(run_dir), "--format", "markdown", "--out", str(blocked))
    assert result.exit_code == 1 and result.output.startswith("Error: Could not use ") and "Traceback" not in result.output


# -- what a user expects: housekeeping -------------------------------------------------------------------------


def test_runs_limit_and_rm(env):  # noqa: F811
    first, second = finished_run(env, "a-first", rounds=1), finished_run(env, "b-second", rounds=1)
    listed = json.loads(invoke("runs", "--json", "--limit", "1").output)
    assert [r["id"] for r in listed] == ["b-second"]
    dry = invoke("runs", "rm", "a-first", "--dry-run")
    assert dry.exit_code == 0 and f"would delete {first}" in dry.output and first.is_dir()
    missing = invoke("runs", "rm", "a-first", "no-such-run")
    assert missing.exit_code == 1 and "No run 'no-such-run'" in missing.output and first.is_dir()  # all checked first
    gone = invoke("runs", "rm", "a-first")
    assert gone.exit_code == 0 and not first.exists() and second.is_dir()


def test_prune_lists_first_and_keeps_what_a_registry_or_a_run_names(env, tmp_path, monkeypatch):  # noqa: F811
    registry, store = env
    finished_run(env, "keeps-its-weights", rounds=1)
    orphan = store.models_dir / ("ab" * 32 + ".gguf")
    orphan.write_bytes(b"GGUF not named anywhere")
    monkeypatch.setenv("LOCALPANEL_MODELS", str(registry.path))
    dry = invoke("prune")
    assert dry.exit_code == 0 and f"would remove {orphan}" in dry.output and orphan.exists()
    assert dry.output.count("would remove") == 1  # the panel's own weights are named
    done = json.loads(invoke("prune", "--yes", "--json").output)
    assert done["removed"] == [str(orphan)] and not orphan.exists()
    assert all(store.blob(spec.sha256).exists() for spec in registry.models.values())


def test_a_stale_verified_mark_is_rehashed_with_a_word_first(env):  # noqa: F811
    registry, _ = env
    told = []
    from localpanel.weights.store import Store

    store = Store(on_rehash=lambda name, size: told.append((name, size)))
    spec = registry.model("alpha")
    blob = store.blob(spec.sha256)
    os.utime(blob, ns=(blob.stat().st_atime_ns, blob.stat().st_mtime_ns + 10**9))  # touched: the mark is stale
    assert store.path_for(spec) == blob
    assert told == [("alpha", blob.stat().st_size)]
    store.path_for(spec)
    assert len(told) == 1  # verified again: no second re-hash


# -- degenerate text (point 5) --------------------------------------------------------------------------------


@pytest.mark.parametrize("text, loops", [
    (b"The answer is 42000000000", True),  # a run of one character past 6
    (b"id 1693802754122406056", True),  # a run of digits past 15
    (b"the cat the cat the cat the cat", True),  # a chunk three times over
    (b"costs 1,000,000 dollars", False),
    (b"haha, that is a 0.0.0 version", False),  # short chunks need more repeats
    (b"A plain sentence that argues for its vote.", False),
])
def test_degenerate_text_is_caught(text, loops):
    from localpanel.engine.freetext import degenerate

    assert degenerate(text) == loops


def test_a_looping_model_is_steered_off_the_whole_class_it_loops_on():
    import numpy as np

    from localpanel.engine.freetext import looping_class

    class FakeVocab:
        pieces = [b"1", b"23", b"a", b" 4", b"", b"9x"]

        def __init__(self):
            self.tables = {}

        def derived(self, key, build):
            return self.tables.setdefault(key, build())

    vocab = FakeVocab()
    assert np.flatnonzero(looping_class(vocab, 0)).tolist() == [0, 1, 5]  # any token starting with a digit
    assert np.flatnonzero(looping_class(vocab, 2)).tolist() == [2]
    assert np.flatnonzero(looping_class(vocab, 3)).tolist() == [3]


# -- eval scoring hides nothing (point 6) ----------------------------------------------------------------------


def test_a_question_that_cannot_run_is_recorded_failed_scored_and_not_run_again(env, tmp_path):  # noqa: F811
    from localpanel.engine.runtime import RuntimeSettings
    from localpanel.eval import api as eval_api
    from localpanel.eval.questions import load_source
    from localpanel.eval.runner import FAILED, EvalSettings, LocalExecutor

    registry, store = env
    rows = [{"id": "ok", "question": "Is it?", "options": ["Yes", "No"], "answer": "Yes"},
            {"id": "long", "question": "Is it? " + "word " * 760, "options": ["Yes", "No"], "answer": "Yes"}]
    source = tmp_path / "set.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    eval_dir = eval_api.prepare(load_source(str(source)), registry=registry, store=store, panel=registry.panel(),
                                settings=EvalSettings(rounds=1, seed=1), runtime=RuntimeSettings(), out_dir=tmp_path / "ev")
    backend = ScriptedBackend(default=lambda req: ballot("Yes", who=False), context_length=1600)
    report = eval_api.run(eval_dir, LocalExecutor(store, RuntimeSettings(), backend=backend))
    failed = list(eval_dir.rglob(FAILED))
    assert len(failed) == 1 and "does not fit" in json.loads(failed[0].read_text())["reason"]
    assert report.modes["single"].n == 2 and report.modes["single"].value == pytest.approx(0.5)  # the failed one is wrong
    asked = len(backend.requests)
    eval_api.run(eval_dir, LocalExecutor(store, RuntimeSettings(), backend=backend))  # as --resume would
    assert len(backend.requests) == asked  # nothing is asked again


# -- errors at the edge (point 8) ------------------------------------------------------------------------------


def test_a_replay_that_cannot_follow_its_journal_is_one_sentence_exit_1(env, monkeypatch):  # noqa: F811
    """Through the real replay: the backend cannot decode a recorded turn again (as llama.cpp's decoder says when
    the weights or the build differ), and the CLI says so in one sentence, exit 1."""
    from localpanel.engine.decoding import ReplayMismatch

    run_dir = finished_run(env)

    class OtherBuild(ScriptedBackend):
        def generate(self, request, on_token=None):
            raise ReplayMismatch("recorded tokens differ from the plan at ballot token 3")

    monkeypatch.setattr(api, "_backend", lambda runtime: OtherBuild())
    monkeypatch.setenv("LOCALPANEL_MODELS", str(env[0].path))
    result = CliRunner().invoke(cli, ["replay", str(run_dir)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith("Error: The recorded turns cannot be decoded again here (recorded")
    assert result.output.endswith(errors[0] + "\n")


def test_options_a_model_cannot_tell_apart_are_one_sentence_not_a_value_error(env, monkeypatch):  # noqa: F811
    """Raised by the decoder inside a run (two options that read as the same tokens): exit 2, one sentence."""
    from localpanel.errors import UndecodableError

    class Alike(ScriptedBackend):
        def generate(self, request, on_token=None):
            raise UndecodableError("two values of vote (\"Yes\", \"Yes.\") read as the same tokens to this model; "
                                   "make the options differ more.")

    monkeypatch.setattr(api, "_backend", lambda runtime: Alike())
    monkeypatch.setenv("LOCALPANEL_MODELS", str(env[0].path))
    result = CliRunner().invoke(cli, ["poll", "Is it?", "-o", "Yes", "-o", "Yes."])
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert errors == ['Error: two values of vote ("Yes", "Yes.") read as the same tokens to this model; '
                      "make the options differ more."] and result.output.endswith("differ more.\n")


def test_ray_that_does_not_start_is_a_run_error(monkeypatch):
    ray = pytest.importorskip("ray")
    from localpanel.engine.runtime import RuntimeSettings
    from localpanel.eval.runner import RayExecutor

    monkeypatch.setattr(ray, "is_initialized", lambda: False)

    def refuse(**kwargs):
        raise ConnectionError("Could not find any running Ray instance.\nMore text.")

    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(RunError, match=r"Ray did not start at auto \(ConnectionError: More text\.\); check --address"):
        RayExecutor(RuntimeSettings(threads=1), address="auto")


def test_a_cli_run_waits_while_another_run_holds_the_machine(env, monkeypatch):  # noqa: F811
    """A server's queue holds the store's run lock while it runs; a CLI run started meanwhile says it waits, and
    starts only once the lock is free (two runs at once would share the cores)."""
    import threading
    import time

    from localpanel.runs.jobs import MachineLock

    run_dir = finished_run(env, rounds=1)
    started = []
    monkeypatch.setattr(api, "resume", lambda *a, **k: started.append(time.monotonic()) or api.load_run(run_dir, env[1]))
    server = MachineLock.of_store(env[1].home)
    assert server.try_acquire()
    released = []
    threading.Timer(1.0, lambda: (released.append(time.monotonic()), server.release())).start()
    result = invoke("poll", "--resume", str(run_dir))
    assert result.exit_code == 0, result.output
    assert "Waiting for another localpanel run on this machine to finish" in result.output
    assert started and released and started[0] >= released[0]
    again = invoke("poll", "--resume", str(run_dir))  # free now: no wait, nothing said
    assert again.exit_code == 0 and "Waiting" not in again.output


def _other_model(tmp_path, store, name):
    """A model pulled into the store from a registry of its own, which the registry `prune` reads does not list."""
    from localpanel.weights.registry import load_registry

    from .ggufdata import sha, tiny_gguf

    data = tiny_gguf(name)
    (tmp_path / f"{name}.gguf").write_bytes(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"models:\n  {name}:\n    sha256: {sha(data)}\n    sources: [file://{tmp_path / (name + '.gguf')}]\n"
                    f"panels:\n  default:\n    moderator: {name}\n    participants:\n      - {{name: Ann, model: {name}}}\n"
                    f"      - {{name: Bob, model: {name}}}\n")
    registry = load_registry(path)
    store.pull(registry.model(name))
    return registry, sha(data)


def test_prune_keeps_what_runs_inside_evals_and_runs_made_elsewhere_name(env, tmp_path, monkeypatch):  # noqa: F811
    """Issue 23.2: prune read runs/*/manifest.json only, so it deleted the weights of runs inside eval directories,
    of --run-dir runs and of evals made with --out-dir."""
    from localpanel.engine.runtime import RuntimeSettings
    from localpanel.eval import api as eval_api
    from localpanel.eval.questions import load_source
    from localpanel.eval.runner import EvalSettings

    registry, store = env
    yes = lambda req: ballot("Yes", who=False)  # noqa: E731
    away, away_sha = _other_model(tmp_path, store, "gamma")
    api.start_run("Is it?", ["Yes", "No"], registry=away, store=store, backend=ScriptedBackend(default=yes),
                  run_dir=tmp_path / "elsewhere" / "run", with_moderator=False)
    inside, inside_sha = _other_model(tmp_path, store, "delta")
    api.start_run("Is it?", ["Yes", "No"], registry=inside, store=store, backend=ScriptedBackend(default=yes),
                  run_dir=store.home / "evals" / "an-eval" / "runs" / "00000-q1", with_moderator=False)
    evaluated, eval_sha = _other_model(tmp_path, store, "epsilon")
    (tmp_path / "q.jsonl").write_text('{"id": "q1", "question": "Is it?", "options": ["Yes", "No"], "answer": "Yes"}\n')
    eval_api.prepare(load_source(str(tmp_path / "q.jsonl")), registry=evaluated, store=store, panel=evaluated.panel(),
                     settings=EvalSettings(), runtime=RuntimeSettings(), out_dir=tmp_path / "elsewhere" / "eval")
    orphan = store.models_dir / ("ab" * 32 + ".gguf")
    orphan.write_bytes(b"GGUF not named anywhere")
    monkeypatch.setenv("LOCALPANEL_MODELS", str(registry.path))
    dry = invoke("prune")
    assert dry.exit_code == 0 and f"Kept: what these models.yaml layers name ({registry.path})" in dry.output
    done = json.loads(invoke("prune", "--yes", "--json").output)
    assert done["removed"] == [str(orphan)] and done["registry_layers"] == [str(registry.path)]
    assert all(store.blob(s).exists() for s in (away_sha, inside_sha, eval_sha))


def test_runs_rm_refuses_an_eval_being_written_or_one_whose_run_is(env, tmp_path):  # noqa: F811
    """Issue 23.3: runs rm deleted an eval directory without checking any lock."""
    from localpanel.engine.runtime import RuntimeSettings
    from localpanel.eval import api as eval_api
    from localpanel.eval.questions import load_source
    from localpanel.eval.runner import EvalSettings, eval_lock

    registry, store = env
    (tmp_path / "q.jsonl").write_text('{"id": "q1", "question": "Is it?", "options": ["Yes", "No"], "answer": "Yes"}\n')
    eval_dir = eval_api.prepare(load_source(str(tmp_path / "q.jsonl")), registry=registry, store=store,
                                panel=registry.panel(), settings=EvalSettings(), runtime=RuntimeSettings(),
                                out_dir=tmp_path / "ev")
    with eval_lock(eval_dir):  # an eval --resume running in another process
        held = invoke("runs", "rm", str(eval_dir))
    assert held.exit_code == 1 and "being written by another localpanel process" in held.output and eval_dir.is_dir()
    inner = eval_dir / "runs" / "00000-q1"
    api.start_run("Is it?", ["Yes", "No"], registry=registry, store=store, run_dir=inner, with_moderator=False,
                  backend=ScriptedBackend(default=lambda req: ballot("Yes", who=False)))
    with RunDir(inner).lock():  # its question's run being written
        held = invoke("runs", "rm", str(eval_dir))
    assert held.exit_code == 1 and "being written" in held.output and inner.is_dir()
    assert invoke("runs", "rm", str(eval_dir)).exit_code == 0 and not eval_dir.exists()


def test_two_resume_requests_at_once_make_one_job(env):  # noqa: F811
    """Issue 23.3: two requests that both found the run not yet queued each queued a job on one run. The check
    and the queueing are one step now; forced here by letting both requests pass the check."""
    from localpanel.serve.service import Service

    registry, store = env
    gate = threading.Event()
    backend = ScriptedBackend(default=lambda req: (gate.wait(10), ballot("Yes", who=False))[1])
    prepared = api.prepare_run(api.RunRequest(question="Is it?", options=["Yes", "No"], moderator=False), registry=registry,
                               store=store, backend=backend)
    svc = Service(store, registry_file=str(registry.path), make_backend=lambda runtime: backend)
    try:
        svc.queue.busy_with = lambda job_id: False  # both requests saw no job yet
        first, second = svc.resume(prepared.id), svc.resume(prepared.id)
        assert first is second and len(svc.queue.jobs) == 1
    finally:
        gate.set()
        svc.close()


def test_a_typo_is_said_at_once_while_another_run_holds_the_machine(env, tmp_path):  # noqa: F811
    """Issue 23.16: the CLI took the machine's run lock before checking its input, so a poll with one option
    waited behind a running eval before saying so."""
    from localpanel.runs.jobs import MachineLock

    registry, store = env
    held = MachineLock.of_store(store.home)
    assert held.try_acquire()  # an eval running in another process
    try:
        done = subprocess.run([sys.executable, "-m", "localpanel", "--models", str(registry.path), "poll", "Is it?",
                               "-o", "Only one"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "LOCALPANEL_HOME": str(store.home)})
    finally:
        held.release()
    assert done.returncode == 2 and "at least 2 options" in done.stderr and "Waiting" not in done.stderr


def test_more_than_64_seats_on_the_command_line_is_one_sentence(env, monkeypatch):  # noqa: F811
    """Issue 23.13: 65 --model options gave a traceback (a pydantic error from the panel's limit)."""
    registry, _ = env
    monkeypatch.setenv("LOCALPANEL_MODELS", str(registry.path))
    result = CliRunner().invoke(cli, ["poll", "Is it?", *(["--model", "alpha"] * 65)])
    assert result.exit_code == 2 and "A panel seats at most 64 participants; 65 models were given." in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
