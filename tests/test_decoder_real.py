"""Decoder 3 on real weights: an integer vote is the seat's view (greedy, whatever the temperature) unless votes
are drawn (issue 32.7), and free text keeps to the question's scripts (32.16)."""

import json

import numpy as np
import pytest

from localpanel import api
from localpanel.engine.decoding import decode_plan
from localpanel.engine.grammar import compile_schema
from localpanel.engine.runtime import Sampling
from localpanel.engine.scripts import foreign_tokens, scripts_of
from localpanel.panel.ballot import ballot_model
from localpanel.panel.protocol import DebateSettings

from .test_copy_guard_real import Pasting, vocab  # noqa: F401  (vocab: smollm2's real vocabulary)

QUESTION = "How many legs do three spiders and two ants have in all?"


def votes(store, registry, **settings):
    t = api.start_run(QUESTION, [], registry=registry, store=store, panel="tiny", integer=True, with_moderator=False,
                      settings=DebateSettings(rounds=1, **settings))
    assert all(x.valid for x in t.rounds[0].turns)
    return [x.vote for x in t.rounds[0].turns]


@pytest.mark.real
def test_an_integer_vote_is_the_seats_view_unless_votes_are_drawn(store_with_weights, registry):
    store = store_with_weights
    greedy = votes(store, registry, seed=4, temperature=0.0)
    for seed, temperature in ((4, 1.5), (9, 1.2)):
        assert votes(store, registry, seed=seed, temperature=temperature) == greedy  # the view does not draw
    drawn = [votes(store, registry, seed=s, temperature=1.5, vote_draw=True) for s in (4, 5, 6)]
    assert any(d != greedy for d in drawn)  # drawn at the seat's temperature, as --vote-draw says


def test_the_question_names_the_scripts_its_answers_may_use():
    assert scripts_of(["Which web framework?", "Django"]) == ()
    assert scripts_of(["用什么框架?"]) == ("cjk", "kana") and scripts_of(["Привет, мир?"]) == ("cyrillic",)
    pieces = [b"web", "框架".encode(), "框".encode()[:1], "框".encode()[:2], b"\xa1\x86", "—".encode(), "é".encode(),
              "д".encode()[:1], "д".encode(), b"\xe3", "😀".encode()]
    assert foreign_tokens(pieces, ()).tolist() == [False, True, True, True, False, False, False, True, True, False, False]
    assert not foreign_tokens(pieces, ("cjk", "kana", "cyrillic")).any()


@pytest.mark.real
def test_free_text_pushed_into_another_script_stays_in_the_questions(vocab):  # noqa: F811
    """An evaluator that pushes the rationale to write '...its own web框架.' token by token: kept to the question's
    scripts (Latin), no CJK byte is written and the ballot still ends a sentence; allowed CJK, it is written."""
    plan = compile_schema(ballot_model(["Yes", "No"]).model_json_schema())

    def decode(scripts):
        ev = Pasting(vocab, vocab.tokenize("It needs extensive learning to write its own web框架."))
        ev.eval(vocab.tokenize("Ballot:"))
        d = decode_plan(ev, vocab, plan.keeping_to(scripts), Sampling(temperature=0.0, repeat_penalty=1.0), 1, 512)
        return d, json.loads(b"".join(vocab.pieces[t] for t in d.tokens).decode())

    kept, ballot = decode(scripts_of(["Is a web framework worth writing?"]))
    assert kept.failure is None and ballot["rationale"].startswith("It needs extensive learning")
    assert not any(0x3400 <= ord(c) <= 0x9FFF for c in ballot["rationale"]), ballot["rationale"]
    free, ballot = decode(None)
    assert "框架" in ballot["rationale"]
    assert np.isin(kept.tokens, np.flatnonzero(foreign_tokens(vocab.pieces, ()))).sum() == 0
