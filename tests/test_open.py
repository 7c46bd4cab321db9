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
    assert t.council is not None and t.council.answer == "Miguel de Cervantes" and t.council.answer_seats == ["Ann", "Bob", "Di"]
    for fmt in ("text", "markdown", "html"):
        out = render(t, fmt)
        assert "Proposals" in out and "Lope de Vega" in out and "Ann" in out and "council" in out
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


def test_an_open_eval_scores_proposals_candidates_and_votes_against_the_accepted_answers(env, tmp_path):  # noqa: F811
    """Scored as SQuAD and NQ-open score: a right text is any accepted answer after normalization."""
    import json

    from localpanel.engine.runtime import RuntimeSettings
    from localpanel.eval import api as eval_api
    from localpanel.eval.questions import load_source
    from localpanel.eval.runner import EvalSettings, LocalExecutor

    rows = [{"id": "dq", "question": "Who wrote Don Quixote?", "answers": ["Miguel de Cervantes", "Cervantes"]},
            {"id": "cap", "question": "What is the capital of Australia?", "answers": ["Canberra"]}]
    path = tmp_path / "open.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proposals = {"Who wrote": {"Ann": "Cervantes", "Bob": "Lope de Vega", "Cy": "Lope de Vega", "Di": "The Cervantes"},
                 "What is the": {"Ann": "Sydney", "Bob": "Canberra", "Cy": "Sydney", "Di": "Melbourne"}}

    def answer(request):
        user = [m for m in request.messages if m.role == "user"][0].content
        which = next(k for k in proposals if k in user)
        if "answer" in request.schema_["properties"]:
            working = {"rationale": "Working it out plainly."} if "rationale" in request.schema_["properties"] else {}
            return {**working, "answer": proposals[which][request.key]}
        options = request.schema_["properties"]["vote"]["enum"]
        vote = "Sydney" if "Sydney" in options else next(o for o in options if "Cervantes" in o)
        b = {"vote": vote, "rationale": "A plain reason for it."}
        if "attributed_to" in request.schema_["properties"]:
            b["attributed_to"] = None
        return b

    registry, store = env
    qs = load_source(str(path))
    assert all(q.open for q in qs.questions)
    eval_dir = eval_api.prepare(qs, registry=registry, store=store, panel=registry.panel(),
                                settings=EvalSettings(rounds=2, seed=3), runtime=RuntimeSettings(), out_dir=tmp_path / "ev")
    report = eval_api.run(eval_dir, LocalExecutor(store, RuntimeSettings(), backend=ScriptedBackend(default=answer)))
    # single: each seat's proposal (dq: Ann and Di right; cap: Bob right) = (2/4 + 1/4) / 2
    assert report.modes["single"].value == pytest.approx(0.375)
    # proposals: dq merges Cervantes + The Cervantes (2) against Lope de Vega (2): a tie -> 1/2; cap: Sydney leads -> 0
    assert report.modes["proposals"].value == pytest.approx(0.25)
    assert report.modes["ceiling"].value == pytest.approx(1.0)
    assert report.modes["vote"].value == pytest.approx(0.5) and report.modes["debate"].value == pytest.approx(0.5)
    o = report.open_questions
    assert o.questions == 2 and o.ceiling.value == 1.0 and (o.right_apart, o.wrong_merged) == (0, 0)
    assert o.candidates == pytest.approx((2 + 3) / 2)  # dq: Cervantes, Lope de Vega; cap: Sydney, Canberra, Melbourne
    # dq: Cervantes 1, Lope de Vega 1/3 twice (only "de" shared with Miguel de Cervantes), The Cervantes 1; cap: 1/4
    assert o.proposal_f1.value == pytest.approx(((1 + 1 / 3 + 1 / 3 + 1) / 4 + 1 / 4) / 2)
    from localpanel.eval.render import render_report

    assert "Open questions" in render_report(report, "text") and "Open questions" in render_report(report, "html")


def test_open_benchmarks_install_offline_with_their_answers(tmp_path):
    from localpanel.eval.benchmarks import load_benchmark
    from localpanel.eval.scores import squad_normalized, token_f1

    nq = load_benchmark("naturalqs", 0, 5, tmp_path)
    assert len(nq.questions) == 5 and all(q.open and q.answers and q.answer == q.answers[0] for q in nq.questions)
    assert nq.questions[0].question == "Who is playing halftime show super bowl 2018?"
    squad = load_benchmark("squad", 0, 3, tmp_path)
    assert all(q.open and "\n\nQuestion, answered from the text above: " in q.question for q in squad.questions)
    assert squad.questions[0].answers == ["23 years", "23"]
    assert squad_normalized("The  Beatles!") == "beatles" and token_f1("the 23 years", ["23"]) == pytest.approx(2 / 3)


def test_the_council_answers_in_fixed_fields_each_citing_seats(env):  # noqa: F811
    registry, store = env
    answers = {"Ann": "Canberra", "Bob": "Canberra", "Cy": "Sydney", "Di": "canberra"}
    votes = {"Ann": "Canberra", "Bob": "Canberra", "Cy": "Sydney", "Di": "Canberra"}
    backend = scripted_open(ScriptedBackend(), answers, votes)
    backend.enqueue("[moderator]", {"strongest": 1, "case": "It was chosen as a compromise between two rival cities."})
    t = api.run(RunRequest(question="What is the capital of Australia?", kind="open", settings=DebateSettings(seed=3)),
                registry=registry, store=store, backend=backend)
    k = t.council
    assert k.answer == "Canberra" and k.answer_seats == ["Ann", "Bob", "Di"]
    assert k.consensus.seats == ["Ann", "Bob", "Di"] and "compromise" in k.consensus.text
    assert [(p.candidate, p.seats) for p in k.single_points] == [("Sydney", ["Cy"])] and k.disagreements == []
    assert k.single_points[0].text == "Cy thinks so, plainly."
    card = render(t, "text")
    assert "Where they agree — Canberra (Ann, Bob, Di):" in card and "Said by one seat only — Sydney (Cy):" in card


def test_an_open_question_whose_every_proposal_fails_is_one_sentence_and_its_proposals_stay_journaled(env):  # noqa: F811
    from localpanel.errors import QuestionError

    registry, store = env
    backend = ScriptedBackend()
    for name in NAMES:
        backend.enqueue(name, Failed("cut off at 512 tokens"))
    with pytest.raises(QuestionError, match="every proposal failed \\(the first: cut off at 512 tokens\\)"):
        api.run(RunRequest(question="Who?", kind="open", moderator=False), registry=registry, store=store, backend=backend)
    journal, _ = RunDir(next(store.runs_dir.iterdir())).journal()
    assert [t.round for t in journal] == [0, 0, 0, 0] and all(t.failure for t in journal)
