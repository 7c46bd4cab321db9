"""Seat weights from held-out questions (issue 25.2): the log-odds weights, a strong seat that outweighs two weak
ones, and calibrate -> eval --weights through the CLI on scripted seats of known accuracy, refusing overlap."""

import json
import math

import pytest
from click.testing import CliRunner

from localpanel import api
from localpanel.cli import cli
from localpanel.engine.scripted import ScriptedBackend
from localpanel.errors import InputError
from localpanel.eval.questions import load_source
from localpanel.eval.weights import weight, weighted_scores

from .test_protocol import env  # noqa: F401  (the four-seat scripted panel: Ann, Bob on alpha; Cy, Di on beta)


def test_weights_are_the_log_odds_of_accuracy_against_chance():
    # the figures: Qwen2.5 base on ARC-C, four options, at 1,000 ballots (shrinkage moves them little)
    assert weight(547, 1000, 4) == pytest.approx(math.log(548 / 454) + math.log(3)) == pytest.approx(1.29, abs=0.01)
    assert weight(356, 1000, 4) == pytest.approx(0.51, abs=0.01)
    assert weight(250, 1000, 4) == pytest.approx(0.0, abs=0.01) and weight(100, 1000, 4) == 0.0  # at or below chance: not heard
    # issue 32.6: the sample size counts; 8 of 8 right is less sure than 980 of 1,000, and no seat is ever certain
    assert weight(8, 8, 2) == pytest.approx(math.log(9 / 1)) and weight(980, 1000, 2) == pytest.approx(math.log(981 / 21))
    assert weight(8, 8, 2) < weight(980, 1000, 2)
    assert weight(0, 0, 2) == 0.0


def test_one_strong_seat_outweighs_two_weak_ones():
    votes, confs = ["A", "B", "B"], [{"A": 0.9, "B": 0.1}, {"A": 0.4, "B": 0.6}, {"A": 0.45, "B": 0.55}]
    assert weighted_scores(votes, confs, [1.29, 0.51, 0.51], "A") == {"calibrated vote": 1.0, "calibrated weighted": 1.0}
    assert weighted_scores(votes, confs, [1.0, 1.0, 1.0], "A")["calibrated vote"] == 0.0  # unweighted: B wins


def rows(prefix, n):
    return [{"id": f"{prefix}{k}", "question": f"{prefix} question {k}?", "options": ["Yes", "No"], "answer": "Yes"}
            for k in range(n)]


def test_calibrate_then_score_with_the_weights_and_refuse_overlap(env, tmp_path, monkeypatch):  # noqa: F811
    """alpha's seats (Ann, Bob) are always right, beta's (Cy, Di) always wrong: alpha weighs log(9/1), 8 of 8, beta 0;
    scored on other questions, the calibrated vote follows alpha where the plain majority ties."""
    registry, store = env

    def answer(request):
        right = request.model.name == "alpha"
        b = {"vote": "Yes" if right else "No", "rationale": f"{request.key} says so, firmly."}
        b["confidence"] = {"Yes": 0.7, "No": 0.3} if right else {"Yes": 0.3, "No": 0.7}
        return b

    monkeypatch.setattr(api, "_backend", lambda runtime: ScriptedBackend(default=answer))
    monkeypatch.setenv("LOCALPANEL_MODELS", str(registry.path))
    held, scored = tmp_path / "held.jsonl", tmp_path / "scored.jsonl"
    held.write_text("".join(json.dumps(r) + "\n" for r in rows("held", 4)))
    scored.write_text("".join(json.dumps(r) + "\n" for r in rows("scored", 3)))
    done = CliRunner().invoke(cli, ["calibrate", str(held), "-q"])
    assert done.exit_code == 0, done.output
    saved = json.loads((store.home / "weights" / "default.json").read_text())
    assert saved["models"]["alpha"] == {"accuracy": 1.0, "n": 8, "weight": pytest.approx(math.log(9 / 1), abs=1e-5)}
    assert saved["models"]["beta"]["weight"] == 0.0 and len(saved["questions"]) == 4
    result = CliRunner().invoke(cli, ["eval", str(scored), "--weights", "default", "--rounds", "1", "--json", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["modes"]["vote"]["value"] == 0.5  # two and two: a tie, half a point
    assert report["modes"]["calibrated vote"]["value"] == 1.0 and report["modes"]["calibrated weighted"]["value"] == 1.0
    assert report["weights"].startswith(str(held)) and "alpha 2.20 (100% of 8)" in report["weights"]
    assert report["cost"]["calibrated vote"] == report["cost"]["calibrated weighted"] == report["cost"]["vote"]  # same ballots
    from localpanel.eval.render import render_report
    from localpanel.eval.report import Report

    table = [line for line in render_report(Report.model_validate(report), "text").splitlines() if "|acc" in line]
    assert len(table) >= 8 and len({line.index("|acc") for line in table}) == 1  # one column, however long the mode
    overlap = CliRunner().invoke(cli, ["eval", str(held), "--weights", "default", "-q"])
    assert overlap.exit_code == 2 and "are among the 4 the weights were calibrated on" in overlap.output
    missing = CliRunner().invoke(cli, ["eval", str(scored), "--weights", "nope", "-q"])
    assert missing.exit_code == 2 and "calibrate the panel first" in missing.output
    # a poll with the weights: the plain count ties, the weighted one follows the calibrated model
    poll = CliRunner().invoke(cli, ["poll", "Is it?", "--weights", "default", "--no-moderator", "-q"])
    assert poll.exit_code == 0, poll.output
    assert "Result: Tie — No/Yes (2/2)" in poll.output
    line = (f"Weighted by calibration ({held}; each vote counts its model's weight): Yes 4.39 · No 0.00; leader Yes, "
            "which differs from the plain count.")
    assert "".join(line.split()) in "".join(poll.output.split())  # (wrapped on the card)
    shown = json.loads(CliRunner().invoke(cli, ["show", "last", "--json"]).output)
    assert shown["weighted_count"]["leaders"] == ["Yes"] and shown["settings"]["weights_from"] == str(held)


def test_calibrate_from_an_eval_reads_its_round_1_ballots_and_runs_nothing(env, tmp_path, monkeypatch):  # noqa: F811
    """An eval already run on held-out questions gives the same weights as `calibrate` running them again, reads
    only, and its questions are refused for scoring; a calibration run asks the ballot order it is told."""
    registry, store = env
    backends = []

    def answer(request):
        b = {"vote": "Yes" if request.model.name == "alpha" else "No", "rationale": f"{request.key} says so, firmly."}
        b["confidence"] = {"Yes": 0.7, "No": 0.3} if b["vote"] == "Yes" else {"Yes": 0.3, "No": 0.7}
        return b

    monkeypatch.setattr(api, "_backend", lambda runtime: backends.append(1) or ScriptedBackend(default=answer))
    monkeypatch.setenv("LOCALPANEL_MODELS", str(registry.path))
    held = _write(tmp_path / "held.jsonl", rows("held", 3))
    done = CliRunner().invoke(cli, ["eval", str(held), "--rounds", "2", "--out-dir", str(tmp_path / "ev"), "-q"])
    assert done.exit_code == 0, done.output
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "ev").rglob("*")}
    ran = len(backends)
    out = CliRunner().invoke(cli, ["calibrate", str(tmp_path / "ev"), "--out", str(tmp_path / "w.json")])
    assert out.exit_code == 0, out.output
    assert len(backends) == ran and {p: p.stat().st_mtime_ns for p in (tmp_path / "ev").rglob("*")} == before
    saved = json.loads((tmp_path / "w.json").read_text())
    assert saved["models"]["alpha"]["n"] == 6 and saved["models"]["alpha"]["accuracy"] == 1.0
    assert saved["models"]["beta"]["weight"] == 0.0 and len(saved["questions"]) == 3
    assert saved["source"].startswith(str(held)) and "round 1 of eval ev" in saved["source"]
    overlap = CliRunner().invoke(cli, ["eval", str(held), "--weights", str(tmp_path / "w.json"), "-q"])
    assert overlap.exit_code == 2 and "are among the 3 the weights were calibrated on" in overlap.output
    other = CliRunner().invoke(cli, ["calibrate", str(tmp_path / "ev"), "--model", "beta", "--out", str(tmp_path / "x.json")])
    assert other.exit_code == 2 and "is an eval of panel default" in other.output and not (tmp_path / "x.json").exists()
    # run afresh, the calibration eval asks the ballot order given (as the eval the weights are for)
    CliRunner().invoke(cli, ["calibrate", str(held), "--ballot", "vote-first", "--out", str(tmp_path / "v.json"), "-q"])
    evals = [json.loads(p.read_text()) for p in (store.home / "evals").glob("*/eval.json")]
    assert [e["settings"]["reason_first"] for e in evals if e["settings"]["rounds"] == 1] == [False]


def test_overlap_is_found_by_the_question_not_its_id(tmp_path):
    from localpanel.eval.weights import Weights, question_key

    qs = load_source(str(_write(tmp_path / "a.jsonl", rows("a", 2)))).questions
    w = Weights(panel="p", source="a", questions=[question_key(qs[0])], models={})
    renamed = [q.model_copy(update={"id": "other-id"}) for q in qs]
    with pytest.raises(InputError, match="1 of these questions"):
        w.check_disjoint(renamed)


def _write(path, data):
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    return path
