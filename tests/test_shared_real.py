"""The shared layout on real weights (the tiny panel): a round's common opening evaluated once per model and copied
to each seat's sequence gives each seat the ballot its whole prompt gives, and the run replays identically."""

import pytest

from localpanel import api
from localpanel.engine import turns as engine_turns
from localpanel.engine.llama import LlamaBackend
from localpanel.engine.runtime import RuntimeSettings
from localpanel.panel.protocol import DebateSettings, Question, Rounds

pytestmark = pytest.mark.real

QUESTION = "Is distilling a closed model's outputs ethical?"
OPTIONS = ["Yes", "No", "It depends"]


def test_a_forked_opening_gives_the_ballot_of_the_whole_prompt_and_replays(store_with_weights, registry, monkeypatch):
    store = store_with_weights
    settings = DebateSettings(rounds=2, seed=5, early_stop=False, layout="shared")
    t = api.start_run(QUESTION, OPTIONS, registry=registry, store=store, panel="tiny", settings=settings,
                      run_dir=store.runs_dir / "shared", with_moderator=False)
    assert all(x.failure is None for r in t.rounds for x in r.turns)
    model_of = {p.name: p.model for p in t.participants}
    for r in t.rounds:  # per model, one seat is charged what the opening needed evaluated, the other holds it all
        for model in set(model_of.values()):
            turns = [x for x in r.turns if model_of[x.participant] == model]
            cached = sorted(x.cached_tokens for x in turns)
            assert len(turns) == 2 and cached[1] >= 32, (r.number, model, cached)
            # round 1 evaluates the opening whole; round 2 extends round 1's (the question and the system prompt)
            assert cached[0] == 0 if r.number == 1 else 32 <= cached[0] < cached[1], (r.number, model, cached)

    # Round 2 asked again, in fresh backends, two ways: the opening evaluated afresh, once, and copied (where the run
    # extended round 1's), and each seat evaluating its whole prompt itself (nothing long enough to share), beside its
    # partner as before. (Asked one at a time, each
    # ballot token would be decoded alone instead of beside the partner's, which llama.cpp computes differently in
    # the last bits: the tiny models' probabilities then move by a point or two, whatever the prompt's layout.)
    seats, _ = api.seats_for(registry, store, "tiny")
    rounds = Rounds(Question.checked(QUESTION, OPTIONS), seats, t.settings, backend=None, done=t.rounds[0].turns)
    plans = [rounds.plan(s, 2) for s in rounds.order(2)]
    requests = [rounds.request(p) for p in plans]
    recorded = {x.participant: x for x in t.rounds[1].turns}
    got = {}
    for label, least in (("forked", engine_turns.MIN_SHARED), ("whole", 10**9)):
        monkeypatch.setattr(engine_turns, "MIN_SHARED", least)
        with LlamaBackend(RuntimeSettings()) as backend:
            got[label] = backend.generate_many(requests)
    assert [g.text for g in got["forked"]] == [recorded[p.seat.name].text for p in plans]
    # The same ballot to the last bit: a shared opening is a saving, never a change.
    assert [(g.tokens, g.choices) for g in got["whole"]] == [(g.tokens, g.choices) for g in got["forked"]]
    evaluated = {label: sum(g.prompt_tokens - g.cached_tokens for g in gens) for label, gens in got.items()}
    shared = sum(g.cached_tokens for g in got["forked"])  # what the second seat of each model held, copied in
    assert evaluated["forked"] == evaluated["whole"] - shared and shared > 0

    report = api.replay(store.runs_dir / "shared", store=store)
    assert report.identical and report.turns_compared == 8, report.divergence
