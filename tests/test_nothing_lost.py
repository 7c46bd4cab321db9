"""Nothing lost, nothing misreported (issue 32): each test here failed before its fix."""

import json
import math

import pytest
from click.testing import CliRunner

from localpanel import api
from localpanel.cli import cli
from localpanel.engine.scripted import ScriptedBackend
from localpanel.errors import InputError

from .test_protocol import ballot, env  # noqa: F401  (the four-seat scripted panel: Ann, Bob on alpha; Cy, Di on beta)
from .test_service import capped, wait_for
from .test_web import call, server  # noqa: F401  (server: the page over real HTTP on 127.0.0.1)


class Described(ScriptedBackend):
    """A scripted backend that describes the runtime it was built with, as llama.cpp's does."""

    def __init__(self, runtime, **kw):
        super().__init__(**kw)
        self.runtime = runtime

    def describe(self) -> dict:
        return {"backend": "scripted", "max_memory": self.runtime.max_memory}


def _answer(request):
    b = {"vote": "Yes" if request.model.name == "alpha" else "No", "rationale": f"{request.key} says so, firmly."}
    b["confidence"] = {"Yes": 0.75, "No": 0.25} if b["vote"] == "Yes" else {"Yes": 0.25, "No": 0.75}
    if "attributed_to" in request.schema_["properties"]:
        b["attributed_to"] = None
    return b


def _rows(prefix, n, **extra):
    return [{"id": f"{prefix}{k}", "question": f"{prefix} question {k}?", "options": ["Yes", "No"], "answer": "Yes", **extra}
            for k in range(n)]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# -- 1. the memory limit the manifest names is the one every backend runs under ----------------------------


def test_a_fresh_eval_and_calibration_run_under_the_panels_memory_limit(env, tmp_path, monkeypatch):  # noqa: F811
    registry, store = capped(env)
    built = []

    def spy(runtime):
        built.append(runtime)
        return Described(runtime, default=_answer)

    monkeypatch.setattr(api, "_backend", spy)
    monkeypatch.setenv("LOCALPANEL_MODELS", str(registry.path))
    questions = _write(tmp_path / "q.jsonl", _rows("q", 2))
    done = CliRunner().invoke(cli, ["eval", str(questions), "--panel", "capped", "--rounds", "1",
                                    "--out-dir", str(tmp_path / "ev"), "-q"])
    assert done.exit_code == 0, done.output
    assert built and all(r.max_memory == 2**30 for r in built)
    for manifest in (tmp_path / "ev").glob("runs/*/manifest.json"):
        m = json.loads(manifest.read_text())
        assert m["runtime"]["max_memory"] == m["environment"]["max_memory"] == 2**30
    built.clear()
    cal = CliRunner().invoke(cli, ["calibrate", str(questions), "--panel", "capped", "--out", str(tmp_path / "w.json"), "-q"])
    assert cal.exit_code == 0, cal.output
    assert built and all(r.max_memory == 2**30 for r in built)


def test_a_run_started_from_the_page_records_the_environment_it_ran_under(env):  # noqa: F811
    from localpanel.serve.service import Service

    registry, store = capped(env)
    svc = Service(store, registry_file=str(registry.path),
                  make_backend=lambda runtime: Described(runtime, default=lambda req: ballot("Yes", who=False)))
    try:
        job = svc.start("Is it?", panel="capped", moderator=False)
        wait_for(lambda: job.state == "finished")
        m = api.load_run(job.id, store)
        assert m.runtime.max_memory == 2**30 and m.environment["max_memory"] == 2**30
    finally:
        svc.close()


# -- 2. a directory holding journaled turns is never removed --------------------------------------------------


def test_placing_a_workers_run_keeps_the_journal_it_resumed_from(tmp_path):
    from localpanel.eval.runner import FAILED, JobFailure, _journal_files, _place

    run_dir = tmp_path / "runs" / "00000-q"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text("{}")
    (run_dir / "turns.jsonl").write_text('{"turn": 1}\n')
    assert _journal_files(run_dir) == {"manifest.json": "{}", "turns.jsonl": '{"turn": 1}\n'}
    inode = run_dir.stat().st_ino
    failed = _place(run_dir, {FAILED: json.dumps({"reason": "too long for a context"})})
    assert isinstance(failed, JobFailure) and failed.reason == "too long for a context"
    assert run_dir.stat().st_ino == inode and (run_dir / "turns.jsonl").read_text() == '{"turn": 1}\n'
    assert _journal_files(tmp_path / "nothing-here") == {}


# -- 3. prune says what it cannot see, and keeps what it is told to -------------------------------------------


def test_prune_keeps_the_weights_of_a_run_it_is_pointed_at_and_says_what_it_cannot_see(env, tmp_path, monkeypatch):  # noqa: F811
    """A --run-dir run made before the store listed such runs (elsewhere.txt removed, as before 0.2.0)."""
    from .test_defects import _other_model, invoke

    registry, store = env
    away, away_sha = _other_model(tmp_path, store, "gamma")
    api.start_run("Is it?", ["Yes", "No"], registry=away, store=store, run_dir=tmp_path / "old" / "run",
                  backend=ScriptedBackend(default=lambda req: ballot("Yes", who=False)), with_moderator=False)
    (store.home / store.ELSEWHERE).unlink()
    monkeypatch.setenv("LOCALPANEL_MODELS", str(registry.path))
    dry = invoke("prune")
    assert "Not seen: runs made elsewhere before localpanel 0.2.0 or moved since; name them with --keep DIR" in dry.output
    assert f"would remove {store.blob(away_sha)}" in dry.output and not (store.home / store.ELSEWHERE).exists()
    kept = json.loads(invoke("prune", "--yes", "--json", "--keep", str(tmp_path / "old")).output)
    assert kept["removed"] == [] and store.blob(away_sha).exists()
    assert json.loads(invoke("prune", "--yes", "--json").output)["removed"] == []  # remembered with --yes
    missing = invoke("prune", "--keep", str(tmp_path / "nope"))
    assert missing.exit_code == 2 and "does not exist" in missing.output


# -- 4. weights cover the seats, and overlap is found on the library path after normalizing ------------------


def _weights(models, questions=()):
    from localpanel.eval.weights import ModelWeight, Weights, question_key

    return Weights(panel="other", source="held.jsonl", questions=[question_key(q) for q in questions],
                   models={m: ModelWeight(accuracy=0.9, n=10, weight=1.5) for m in models})


def test_weights_that_cover_no_seat_are_refused_everywhere(env, tmp_path):  # noqa: F811
    from localpanel.eval import api as eval_api
    from localpanel.eval.questions import load_source
    from localpanel.eval.runner import EvalSettings
    from localpanel.panel.protocol import DebateSettings

    registry, store = env
    questions = load_source(str(_write(tmp_path / "q.jsonl", _rows("q", 2))))
    with pytest.raises(InputError, match=r"^The weights calibrated on held.jsonl cover alpha, not beta; calibrate"):
        eval_api.prepare(questions, registry=registry, store=store, panel=registry.panel(),
                         settings=EvalSettings(weights=_weights(["alpha"])), runtime=None, out_dir=tmp_path / "ev")
    assert not (tmp_path / "ev").exists()
    settings = DebateSettings(seat_weights={"alpha": 1.5}, weights_from="held.jsonl")
    with pytest.raises(InputError, match="cover alpha, not beta"):
        api.check_run(api.RunRequest(question="Is it?", options=["Yes", "No"], settings=settings), registry=registry,
                      store=store, backend=ScriptedBackend())


def test_scoring_on_calibration_questions_is_refused_by_the_library_after_normalizing(env, tmp_path):  # noqa: F811
    from localpanel.eval import api as eval_api
    from localpanel.eval.questions import load_source
    from localpanel.eval.runner import EvalSettings

    registry, store = env
    held = load_source(str(_write(tmp_path / "held.jsonl", [{"id": "h", "question": "Is the SKY  blue?",
                                                              "options": ["Yes!", "No"], "answer": "Yes!"}])))
    scored = load_source(str(_write(tmp_path / "q.jsonl", [{"id": "other", "question": "is the sky blue",
                                                             "options": ["no", "yes"], "answer": "yes"}])))
    with pytest.raises(InputError, match="1 of these questions .first: other. are among the 1 the weights"):
        eval_api.prepare(scored, registry=registry, store=store, panel=registry.panel(), runtime=None,
                         settings=EvalSettings(weights=_weights(["alpha", "beta"], held.questions)), out_dir=tmp_path / "ev")


# -- 5 and 6. every mode over the same questions; a mode without a score says so ------------------------------


def test_every_mode_is_over_the_same_questions_and_a_failed_one_scores_0(env, tmp_path):  # noqa: F811
    """A question that could not run used to be left out of Borda, Condorcet and both calibrated modes (a smaller,
    easier set), and 'against the best seat' took its modes from the first question only."""
    from localpanel.errors import ContextOverflowError
    from localpanel.eval import api as eval_api
    from localpanel.eval.compare import compare
    from localpanel.eval.questions import load_source
    from localpanel.eval.runner import EvalSettings, LocalExecutor

    from .test_eval import FailingAt

    registry, store = env
    rows = [{"id": "first", "question": "What is 6*7?", "answer": 42}, *_rows("q", 3)]
    questions = load_source(str(_write(tmp_path / "q.jsonl", rows)))

    def answer(request):
        b = _answer(request)
        if "enum" not in request.schema_["properties"]["vote"]:
            b["vote"] = 42
        return b

    settings = EvalSettings(rounds=1, weights=_weights(["alpha", "beta"]))
    eval_dir = eval_api.prepare(questions, registry=registry, store=store, panel=registry.panel(), runtime=None,
                                settings=settings, out_dir=tmp_path / "ev")
    too_long = ContextOverflowError("The question does not fit Ann's context.")
    report = eval_api.run(eval_dir, LocalExecutor(store, None, backend=FailingAt(ScriptedBackend(default=answer), 4, too_long)))
    assert report.failed_questions == {"q0": "The question does not fit Ann's context."}
    for mode in ("weighted", "borda", "condorcet", "calibrated vote", "calibrated weighted"):
        assert report.modes[mode].n == 3, mode  # the three questions with options, the failed one scoring 0
        assert report.modes[mode].value == pytest.approx(0.5 * 2 / 3), mode  # 2 ties of alpha's Yes and beta's No
    assert report.modes["vote"].n == report.modes["single"].n == 4
    assert set(report.against_best.difference) == {"vote", "weighted", "borda", "condorcet", "calibrated vote",
                                                   "calibrated weighted", "debate", "select"}  # the first question is an integer
    assert report.modes["select"].n == 4  # read from the round-1 votes, over every question like the vote
    _, results = eval_api.finished_results(eval_dir)
    manifest = eval_api.load_manifest(eval_dir)
    both = compare(("a", manifest, results), ("b", manifest, results))
    assert {"calibrated vote", "calibrated weighted", "borda", "condorcet"} <= set(both.modes)


def test_weights_all_at_chance_leave_the_calibrated_modes_unscored_and_the_report_says_so(env, tmp_path):  # noqa: F811
    from localpanel.eval import api as eval_api
    from localpanel.eval.questions import load_source
    from localpanel.eval.render import render_report
    from localpanel.eval.runner import EvalSettings, LocalExecutor

    registry, store = env
    w = _weights(["alpha", "beta"])
    for m in w.models.values():
        m.weight = 0.0
    eval_dir = eval_api.prepare(load_source(str(_write(tmp_path / "q.jsonl", _rows("q", 2)))), registry=registry,
                                store=store, panel=registry.panel(), runtime=None, out_dir=tmp_path / "ev",
                                settings=EvalSettings(rounds=1, weights=w))
    report = eval_api.run(eval_dir, LocalExecutor(store, None, backend=ScriptedBackend(default=_answer)))
    assert "calibrated vote" not in report.modes and set(report.unscored) == {"calibrated vote", "calibrated weighted"}
    assert "calibrated vote: no score, since every seat's calibrated weight is 0" in render_report(report, "text")


# -- 9. every given string escaped in the Markdown card (options and names too) ------------------------------

IMG, BOLD, BOB = "![x](http://evil.example/p.png)", "<b>No</b>", "[Bob](http://evil.example/n)"


def test_options_and_names_with_markup_are_text_on_the_markdown_card(env):  # noqa: F811
    from markdown_it import MarkdownIt

    from localpanel.show.render import render
    from localpanel.weights.registry import load_registry

    registry, store = env
    registry.path.write_text(registry.path.read_text().replace("name: Bob,", f'name: "{BOB}",'))
    registry = load_registry(registry.path)

    def answer(request):
        rnd = len([m for m in request.messages if m.role == "user"])
        vote = IMG if request.key in ("Ann", "Di") and rnd == 1 else BOLD
        b = {"vote": vote, "rationale": "Plain words.", "confidence": {IMG: 0.4, BOLD: 0.6} if vote == BOLD else {IMG: 0.6, BOLD: 0.4}}
        if "attributed_to" in request.schema_["properties"]:
            b["attributed_to"] = BOB if request.key == "Ann" else None
        return b

    from localpanel.panel.protocol import DebateSettings

    t = api.start_run("Which?", [IMG, BOLD], registry=registry, store=store, backend=ScriptedBackend(default=answer),
                      settings=DebateSettings(rounds=2, early_stop=False), with_moderator=False)
    assert any(x.attributed_to == BOB for r in t.rounds for x in r.turns)
    from localpanel.panel.moderator import Argument

    strongest = {BOLD: Argument(number=1, participant=BOB, round=1, vote=BOLD, text="Plain words.")}
    page = MarkdownIt("commonmark").enable("table").render(render(t.model_copy(update={"strongest_arguments": strongest}), "markdown"))
    assert "<img" not in page and "<a " not in page and "<b>" not in page
    assert "persuaded by [Bob](http://evil.example/n)" in page and "![x](http://evil.example/p.png) 0.60" in page
    assert "— [Bob](http://evil.example/n), round 1" in page


# -- 12. the run list's cache under several request threads -------------------------------------------------------


def test_the_run_index_is_read_by_many_threads_at_once_without_error(env, monkeypatch):  # noqa: F811
    """Two threads pruning the cache at once: one deletes a key the other is about to (a KeyError, a 500)."""
    import threading
    import time

    from localpanel.serve.reader import RunIndex

    registry, store = env
    for k in range(3):
        api.start_run(f"Is it {k}?", ["Yes", "No"], registry=registry, store=store, with_moderator=False,
                      backend=ScriptedBackend(default=lambda req: ballot("Yes", who=False)))
    index = RunIndex(store)
    real_row = api.run_row
    monkeypatch.setattr(api, "run_row", lambda path: (time.sleep(0.002), real_row(path))[1])
    errors = []

    def reader():
        for _ in range(15):
            with index.lock:
                index.cache.clear()  # every row read again (slowly), and a run removed meanwhile to prune
                index.cache["gone"] = ((), None)
            try:
                assert len(index.rows()) == 3
            except Exception as exc:  # noqa: BLE001 - counted, then asserted below
                errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []


# -- 10. the page's run request is typed: a bad field is one sentence (a 400), never a 500 -------------------


@pytest.mark.parametrize("body, said", [
    (b'{"question": "Q?", "rounds": Infinity}', "rounds must be a whole number; got inf."),
    (b'{"question": "Q?", "seed": -Infinity}', "seed must be a whole number of 0 or more; got -inf."),
    (b'{"question": "Q?", "rounds": 2.5}', "rounds must be a whole number; got 2.5."),
    (b'{"question": "Q?", "rounds": 0}', "rounds must be a whole number from 1 to"),
    (b'{"question": "Q?", "options": ["A", 3]}', "options must be a list of strings"),
    (b'{"question": "Q?", "roundz": 2}', "roundz is not a setting of a run"),
    (b'{"question": 7}', "Give a question."),
    (b'[1, 2]', "The request body must be a JSON object."),
])
def test_bad_run_requests_over_http_are_one_sentence(server, body, said):  # noqa: F811
    base, service = server
    status, _, answer = call(f"{base}/api/runs", body)
    assert status == 400, answer
    assert said in json.loads(answer)["error"]
    assert not service.store.runs_dir.exists() or not any(service.store.runs_dir.iterdir())


# -- 11. the Host check reads IPv6 itself, whatever Starlette's version ----------------------------------------


def test_the_host_check_reads_ipv6_and_ports_itself():
    from localpanel.serve.web import host_name

    assert host_name("[::1]:8765") == "[::1]" and host_name("[::1]") == "[::1]" and host_name("[::1]x") == ""
    assert host_name("LocalHost:80") == "localhost" and host_name("127.0.0.1") == "127.0.0.1"
    assert host_name("evil.example:80:80") == "" and host_name("") == ""


# -- 17. the live rate is the decoding's, and the page asks for no icon it cannot have ------------------------


def test_the_tokens_event_gives_the_decode_rate_not_the_rate_over_the_prompt_too():
    from types import SimpleNamespace

    from localpanel.runs.events import RunEvents

    now = [0.0]
    seen = []
    seat = SimpleNamespace(name="Ann", model=SimpleNamespace(name="alpha"))
    events = RunEvents("r", ["Yes", "No"], [], 1, seen.append, clock=lambda: now[0])
    events.progress("start", seat, 1, 0)
    now[0] = 8.0  # eight seconds reading the prompt
    events.progress("token", seat, 1, 1)
    now[0] = 9.0
    events.progress("token", seat, 1, 21)  # twenty tokens in the next second
    rates = [e.tokens_per_s for e in seen if e.type == "tokens"]
    assert rates == [None, 20.0]  # over the whole turn it said 21 / 9 = 2.3


def test_the_page_and_the_card_ask_for_no_icon(server):  # noqa: F811
    base, _ = server
    status, _, page = call(f"{base}/")
    assert status == 200 and b'<link rel="icon" href="data:,">' in page
    assert call(f"{base}/favicon.ico")[0] == 204


# -- 8. the moderator's facts and the card never contradict each other -----------------------------------------


def test_facts_tell_redraws_from_changes_of_mind_and_old_cards_read_them_from_the_ballots(env):  # noqa: F811
    """With --vote-draw a debate of redraws got 'Nobody changed their vote.' above a vote matrix that shows changes."""
    from localpanel.engine.scripted import PositionBiased
    from localpanel.panel.moderator import facts
    from localpanel.panel.protocol import DebateSettings, Turn
    from localpanel.show.render import render, summary_text

    def turn(who, rnd, vote, view):
        return Turn(participant=who, round=rnd, vote=vote, confidence={view: 0.6, ({"Yes", "No"} - {view}).pop(): 0.4},
                    option_order=["Yes", "No"], seed=0)

    rounds = [[turn("Ann", 1, "No", "Yes"), turn("Bob", 1, "Yes", "Yes")],
              [turn("Ann", 2, "Yes", "Yes"), turn("Bob", 2, "Yes", "Yes")]]
    said = facts(["Yes", "No"], ["Ann", "Bob"], rounds)
    assert "Nobody changed their vote" not in said and "Nobody changed their most probable option." in said
    assert "In round 2, Ann's drawn vote went from No to Yes while its most probable option stayed" in said
    # a card of a run whose saved facts named other changes (as runs saved before views did) reads the ballots
    registry, store = env
    t = api.start_run("Is it?", ["Yes", "No"], registry=registry, store=store, with_moderator=True,
                      backend=ScriptedBackend(default=PositionBiased(lambda order: {"Yes": 0.6, "No": 0.4})),
                      settings=DebateSettings(rounds=2, early_stop=False))
    stale = t.model_copy(update={"moderator": t.moderator.model_copy(update={"facts": "In round 2, Ann moved from No to Yes."})})
    assert "Ann moved" not in render(stale, "text", width=400) and "Nobody changed their vote." in render(stale, "text", width=400)
    assert summary_text(stale).startswith("After 2 rounds, all 4 panelists voted Yes. Nobody changed their vote.")


# -- 15. a call that builds its own backend closes it (the suite held every model it ever loaded: 17.9 GiB) ------


def test_start_resume_and_replay_close_the_backend_they_built(env, monkeypatch):  # noqa: F811
    registry, store = env
    built = []

    class Closing(ScriptedBackend):
        closed = False

        def close(self) -> None:
            self.closed = True

    def make(runtime):
        built.append(Closing(default=lambda req: ballot("Yes", who=False)))
        return built[-1]

    monkeypatch.setattr(api, "_backend", make)
    t = api.start_run("Is it?", ["Yes", "No"], registry=registry, store=store, with_moderator=False)
    api.resume(t.id, store=store)  # finished: loaded, nothing built
    assert api.replay(t.id, store=store).identical
    assert len(built) == 2 and all(b.closed for b in built)  # the run's and the replay's
    given = Closing(default=lambda req: ballot("Yes", who=False))
    api.start_run("Is it?", ["Yes", "No"], registry=registry, store=store, with_moderator=False, backend=given)
    assert not given.closed  # the caller's backend is the caller's to close


def test_the_eval_report_and_comparison_in_markdown_show_given_text_as_text(env, tmp_path):  # noqa: F811
    """Question ids, seat names and the source are given text in every Markdown writer, the eval's too."""
    from markdown_it import MarkdownIt

    from localpanel.errors import ContextOverflowError
    from localpanel.eval import api as eval_api
    from localpanel.eval.compare import render_comparison
    from localpanel.eval.questions import load_source
    from localpanel.eval.render import render_report
    from localpanel.eval.runner import EvalSettings, LocalExecutor
    from localpanel.weights.registry import load_registry

    from .test_eval import FailingAt

    registry, store = env
    registry.path.write_text(registry.path.read_text().replace("name: Bob,", f'name: "{BOB}",'))
    registry = load_registry(registry.path)
    rows = [{"id": IMG, "question": "Is it <b>hot</b>?", "options": ["Yes", "No"], "answer": "Yes"}, *_rows("q", 2)]
    questions = load_source(str(_write(tmp_path / "q.jsonl", rows)))
    eval_dir = eval_api.prepare(questions, registry=registry, store=store, panel=registry.panel(), runtime=None,
                                settings=EvalSettings(rounds=1), out_dir=tmp_path / "ev")
    failing = FailingAt(ScriptedBackend(default=_answer), 0, ContextOverflowError(f"It does not fit {BOB}'s context."))
    report = eval_api.run(eval_dir, LocalExecutor(store, None, backend=failing))
    assert report.failed_questions and BOB in report.participants
    md = MarkdownIt("commonmark").enable("table")
    both = eval_api.compare_evals(eval_dir, eval_dir)
    for page in (md.render(render_report(report, "markdown")), md.render(render_comparison(both, "markdown"))):
        assert "<img" not in page and "<a " not in page and "<b>" not in page
    assert "could not run: ![x](http://evil.example/p.png)" in md.render(render_report(report, "markdown"))
