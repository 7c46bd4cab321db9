"""Open questions on a scripted backend: proposals, the merge, the vote among candidates, the card, resume, replay."""

import pytest

from localpanel import api
from localpanel.api.request import RunRequest
from localpanel.engine.grammar import compile_schema
from localpanel.engine.scripted import Failed, ScriptedBackend
from localpanel.errors import InputError
from localpanel.panel.proposals import merge, normalized, proposal_model
from localpanel.panel.protocol import DebateSettings, Turn
from localpanel.runs.rundir import RunDir
from localpanel.show.render import render

from .test_protocol import NAMES, env  # noqa: F401  (the fixture)


def proposal(seat, text, failure=None):
    return Turn(participant=seat, round=0, vote=None if failure else text, option_order=[], seed=0, failure=failure)


def test_normalized_answers_merge_and_near_equal_ones_join_the_fuller_answer():
    assert normalized("The Beatles!") == normalized("beatles") == "beatles"
    assert normalized("Three  Spiders") == "3 spiders"
    assert normalized("Café") == "cafe"
    m = merge([proposal("Ann", "Cervantes"), proposal("Bob", "Miguel de Cervantes"), proposal("Cy", "Shakespeare"),
               proposal("Di", "miguel de cervantes")])
    assert [c.text for c in m.candidates] == ["Miguel de Cervantes", "Shakespeare"]
    assert m.candidates[0].seats == ["Ann", "Bob", "Di"]
    assert m.candidates[0].proposals == ["Cervantes", "Miguel de Cervantes", "miguel de cervantes"]
    assert m.candidate_of("Cy") == "Shakespeare"


def test_a_bare_number_never_merges_into_a_longer_answer_and_no_merge_keeps_proposals_apart():
    m = merge([proposal("Ann", "1605"), proposal("Bob", "1605 BC"), proposal("Cy", "Paris")])
    assert m.options == ["1605", "1605 BC", "Paris"]
    apart = merge([proposal("Ann", "Cervantes"), proposal("Bob", "Miguel de Cervantes"), proposal("Cy", "Cervantes")],
                  merge_near=False)
    assert apart.options == ["Cervantes", "Miguel de Cervantes"] and "no-merge" in apart.rule


def test_failed_proposals_are_named_and_candidates_that_differ_only_in_case_stay_distinct():
    m = merge([proposal("Ann", "Rome"), proposal("Bob", "", failure="cut off")])
    assert m.options == ["Rome"] and m.failed == ["Bob"]
    apart = merge([proposal("Ann", "paris"), proposal("Bob", "Paris")], merge_near=False)
    assert apart.options == ["paris", "Paris (2)"]


def test_the_proposal_is_one_phrase_on_one_line():
    plan = compile_schema(proposal_model(False).model_json_schema())
    text = [s for s in plan.segments if type(s).__name__ == "Text"]
    assert len(text) == 1 and text[0].phrase and text[0].min_chars == 1 and text[0].max_chars == 80
    reasoned = compile_schema(proposal_model(True).model_json_schema())
    assert [s.phrase for s in reasoned.segments if type(s).__name__ == "Text"] == [False, True]


def scripted_open(backend, answers, votes):
    for name in NAMES:
        backend.enqueue(name, {"answer": answers[name]}, {"vote": votes[name], "rationale": f"{name} thinks so, plainly."})
    return backend


def test_an_open_poll_proposes_merges_and_votes_among_anonymous_candidates(env):  # noqa: F811
    registry, store = env
    answers = {"Ann": "Cervantes", "Bob": "Miguel de Cervantes", "Cy": "Lope de Vega", "Di": "miguel de cervantes"}
    votes = {"Ann": "Miguel de Cervantes", "Bob": "Miguel de Cervantes", "Cy": "Lope de Vega", "Di": "Miguel de Cervantes"}
    backend = scripted_open(ScriptedBackend(), answers, votes)
    t = api.run(RunRequest(question="Who wrote Don Quixote?", kind="open", moderator=False,
                           settings=DebateSettings(seed=3)), registry=registry, store=store, backend=backend)
    assert sorted(t.options) == ["Lope de Vega", "Miguel de Cervantes"]
    assert [p.vote for p in t.proposals] == [answers[n] for n in NAMES]
    assert t.result.winner == "Miguel de Cervantes" and t.result.counts["Miguel de Cervantes"] == 3
    assert t.merge is not None and t.merge.candidate_of("Ann") == "Miguel de Cervantes"
    # No seat is told what it proposed: the vote's conversation starts afresh, the candidates listed alike.
    votes_asked = [r for r in backend.requests if "vote" in r.schema_["properties"]]
    assert all(len(r.messages) == 2 and "Cervantes" not in r.messages[0].content for r in votes_asked)
    run = RunDir(next(store.runs_dir.iterdir()))
    assert run.manifest().question_kind == "open" and run.manifest().options == []
    for fmt in ("text", "markdown", "html"):
        out = render(t, fmt)
        assert "Proposals" in out and "Lope de Vega" in out and "Ann" in out
    assert "merge" in render(t, "json")


def test_an_open_question_takes_no_options_and_a_request_is_open_or_integer(env):  # noqa: F811
    registry, store = env
    with pytest.raises(InputError, match="open question has no options"):
        api.run(RunRequest(question="Who?", kind="open", options=["A", "B"]), registry=registry, store=store,
                backend=ScriptedBackend())
    with pytest.raises(InputError, match="either open or"):
        RunRequest.from_json({"question": "Who?", "open": True, "integer": True})
    assert RunRequest.from_json({"question": "Who?", "open": True}).kind == "open"
    assert not store.runs_dir.exists() or not any(store.runs_dir.iterdir())


def test_an_open_run_resumes_after_its_proposals_and_replays_identically(env):  # noqa: F811
    registry, store = env
    answers = {"Ann": "Rome", "Bob": "Paris", "Cy": "rome", "Di": "Paris"}
    votes = {"Ann": "Rome", "Bob": "Paris", "Cy": "Rome", "Di": "Rome"}
    first = ScriptedBackend()
    for name in NAMES:
        first.enqueue(name, {"answer": answers[name]})
    first.enqueue("Ann", Failed("stopped"))  # a stand-in for a kill: no ballot after the proposals

    class Killed(Exception):
        pass

    def stop(event):
        if type(event).__name__ == "BallotFinished" and event.round == 1:
            raise Killed

    with pytest.raises(Killed):
        api.run(RunRequest(question="Which city?", kind="open", moderator=False), registry=registry, store=store,
                backend=first, on_event=stop)
    path = next(store.runs_dir.iterdir())
    journal, _ = RunDir(path).journal()
    assert [t.round for t in journal].count(0) == 4
    second = ScriptedBackend()
    for name in NAMES:
        second.enqueue(name, {"vote": votes[name], "rationale": "A plain reason for it."})
    t = api.resume(path, store=store, backend=second)
    assert t.result.winner == "Rome" and [p.vote for p in t.proposals] == [answers[n] for n in NAMES]
    assert not any("answer" in r.schema_["properties"] for r in second.requests if r.replay is None)
