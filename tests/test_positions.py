"""Position bias on a scripted model whose probabilities follow the position: the typing order changes nothing,
the display is counterbalanced, permutation averaging cancels the bias exactly, and every card shows it."""

import json
from collections import Counter
from itertools import permutations

import numpy as np
import pytest

from localpanel.engine.draw import gumbel, pick, rotate, shifts
from localpanel.engine.scripted import PositionBiased, ScriptedBackend
from localpanel.panel.protocol import canonical_order, display_order
from localpanel.show.render import render

from .test_protocol import env, run  # noqa: F401  (the four-seat scripted panel)

MERIT = {"DuckDB": 3.0, "PostgreSQL": 2.0, "SQLite": 1.0}
POSITION = [6.0, 1.0, 1.0]  # the model likes whatever it is shown first, six times over


def prior(order: list[str]) -> dict[str, float]:
    weights = {o: MERIT[o] * POSITION[i] for i, o in enumerate(order)}
    total = sum(weights.values())
    return {o: w / total for o, w in weights.items()}


def biased() -> ScriptedBackend:
    return ScriptedBackend(default=PositionBiased(prior))


def test_the_draw_is_exact_and_ignores_the_listing_order():
    values, probs = ["a", "b", "c"], [0.5, 0.3, 0.2]
    draws = Counter(values[pick(values, probs, 1.0, seed, "vote")] for seed in range(20000))
    for v, p in zip(values, probs):
        assert abs(draws[v] / 20000 - p) < 0.015, (v, draws)
    for seed in range(200):
        chosen = {tuple(order): order[pick(list(order), [dict(zip(values, probs))[v] for v in order], 0.7, seed, "vote")]
                  for order in permutations(values)}
        assert len(set(chosen.values())) == 1
    assert gumbel(1, "vote", "a") != gumbel(2, "vote", "a") != gumbel(1, "vote", "b")
    # greedy: the most probable; a tie goes to the smallest text, whatever the listing
    assert pick(["b", "a"], [0.5, 0.5], 0.0, 1, "vote") == 1 and pick(["a", "b"], [0.5, 0.5], 0.0, 1, "vote") == 0


def test_rotations_are_capped_and_evenly_spread():
    assert shifts(2) == [0, 1] and shifts(3) == [0, 1, 2] and shifts(4) == [0, 1, 2, 3]
    assert shifts(8) == [0, 2, 4, 6] and shifts(6) == [0, 1, 3, 4] and shifts(26) == [0, 6, 13, 19]
    assert rotate(["a", "b", "c"], 1) == ["b", "c", "a"]


def test_display_is_a_latin_square_of_one_canonical_order():
    options = ["DuckDB", "PostgreSQL", "SQLite"]
    canonical = canonical_order(options, 7)
    assert canonical == canonical_order(list(reversed(options)), 7) == canonical_order(["SQLite", "DuckDB", "PostgreSQL"], 7)
    orders = [display_order(canonical, i, 1) for i in range(3)]
    for position in range(3):
        assert sorted(order[position] for order in orders) == sorted(options)  # each option once in each place
    four = [display_order(canonical, i, 1) for i in range(4)]
    firsts = Counter(order[0] for order in four)
    assert max(firsts.values()) - min(firsts.values()) <= 1 and len(firsts) == 3
    # the next round shifts every seat on by one
    assert display_order(canonical, 0, 2) == display_order(canonical, 1, 1)


@pytest.mark.parametrize("debias", [True, False])
def test_the_typing_order_changes_no_ballot_and_no_result(env, debias):  # noqa: F811
    runs = []
    for options in (["DuckDB", "PostgreSQL", "SQLite"], ["SQLite", "DuckDB", "PostgreSQL"], ["PostgreSQL", "SQLite", "DuckDB"]):
        t = run(env, biased(), "Which database?", options, seed=7, debias=debias, rounds=2, early_stop=False)
        runs.append(t)
    strip = lambda t: [(x.participant, x.round, x.vote, x.confidence, x.raw_confidence, x.option_order, x.text)  # noqa: E731
                       for r in t.rounds for x in r.turns]
    assert strip(runs[0]) == strip(runs[1]) == strip(runs[2])
    assert runs[0].result.counts == runs[1].result.counts == runs[2].result.counts
    assert runs[0].result.label == runs[1].result.label == runs[2].result.label
    assert [t.options for t in runs] == [["DuckDB", "PostgreSQL", "SQLite"], ["SQLite", "DuckDB", "PostgreSQL"],
                                         ["PostgreSQL", "SQLite", "DuckDB"]]  # the card still lists them as typed


def test_permutation_averaging_cancels_the_position_exactly(env):  # noqa: F811
    t = run(env, biased(), "Which database?", ["DuckDB", "PostgreSQL", "SQLite"], seed=7)
    for turn in t.rounds[0].turns:
        order = turn.option_order
        expected = {o: float(np.mean([prior(rotate(order, k))[o] for k in range(3)])) for o in MERIT}
        assert turn.confidence == pytest.approx(expected, abs=1e-6)
        assert turn.raw_confidence == pytest.approx(prior(order), abs=1e-6)
    # averaged over all rotations every seat holds the same, position-free belief
    assert len({json.dumps(x.confidence, sort_keys=True) for x in t.rounds[0].turns}) == 1
    assert t.positions.debiased == 4 and t.positions.ballots == 4
    shown_first = Counter(x.option_order[0] for x in t.rounds[0].turns)
    assert t.positions.shift["DuckDB"] == pytest.approx(
        np.mean([x.confidence["DuckDB"] - x.raw_confidence["DuckDB"] for x in t.rounds[0].turns]), abs=1e-6)
    assert len(shown_first) == 3


def test_without_debiasing_the_votes_follow_the_position(env):  # noqa: F811
    firsts = {True: 0, False: 0}
    ballots = {True: 0, False: 0}
    for seed in range(12):
        runs = {}
        for debias in (True, False):
            t = runs[debias] = run(env, biased(), "Which database?", ["DuckDB", "PostgreSQL", "SQLite"], seed=seed, debias=debias)
            firsts[debias] += t.positions.first
            ballots[debias] += t.positions.ballots
            if not debias:
                assert t.positions.shift == {} and all(x.raw_confidence is None for x in t.rounds[0].turns)
        # The card's "in the order shown alone" is exactly what a --no-debias run votes: the same draw, raw probabilities.
        assert runs[True].positions.first_undebiased == runs[False].positions.first
        assert runs[True].positions.last_undebiased == runs[False].positions.last
    # shown first: p = 0.6-0.75 for this model; averaged: the position no longer counts
    assert firsts[False] / ballots[False] > 0.55
    assert firsts[True] / ballots[True] < 0.45


def test_every_format_shows_the_position_effect(env):  # noqa: F811
    t = run(env, biased(), "Which database?", ["DuckDB", "PostgreSQL", "SQLite"], seed=7)
    p = t.positions
    first = f"Voted for the option shown first: {p.first} of 4 ballots; shown last: {p.last} of 4 (chance: 33% each)."
    for fmt in ("text", "markdown", "html"):
        out = render(t, fmt, width=400)
        assert "Position effect" in out
        assert first in out
        assert f"DuckDB {100 * p.shift['DuckDB']:+.0f} pts" in out
    data = json.loads(render(t, "json"))
    assert data["positions"]["first"] == p.first and set(data["positions"]["shift"]) == set(MERIT)
    off = run(env, biased(), "Which database?", ["DuckDB", "PostgreSQL", "SQLite"], seed=7, debias=False)
    assert "Not debiased" in render(off, "text")


def test_a_shift_is_told_in_whole_points_and_never_as_minus_zero():
    from localpanel.panel.tally import PositionEffect, shift_line

    p = PositionEffect(ballots=4, first=1, last=1, chance=1 / 3, shift={"A": 0.123, "B": -0.004, "C": -0.119}, debiased=4)
    assert shift_line(p, ["A", "B", "C"]).endswith("A +12 pts · B 0 pts · C -12 pts.")
