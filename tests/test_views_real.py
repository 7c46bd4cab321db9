"""Votes as views on real weights (the tiny panel): every vote is its ballot's most probable option, and a run
saved before votes were views (drawn votes, manifest schema 1) still replays identically."""

import json

import pytest

from localpanel import api
from localpanel.panel.protocol import DebateSettings

pytestmark = pytest.mark.real

QUESTION = "Should a city ban cars from its centre?"
OPTIONS = ["Yes", "No", "Only on weekends"]


def test_every_vote_is_the_most_probable_option_of_its_ballot(store_with_weights, registry):
    store = store_with_weights
    t = api.start_run(QUESTION, OPTIONS, registry=registry, store=store, panel="tiny",
                      settings=DebateSettings(rounds=2, seed=3, early_stop=False, temperature=1.5), run_dir=store.runs_dir / "views")
    ballots = [x for r in t.rounds for x in r.turns]
    assert len(ballots) == 8 and all(x.valid for x in ballots)
    for x in ballots:
        best = max(x.confidence.values())
        assert x.confidence[x.vote] == best, (x.participant, x.round, x.vote, x.confidence)
        assert x.vote == x.view
    # a turning point is a change of that option, and nothing else
    for name, votes in t.vote_matrix.items():
        assert sum(a != b for a, b in zip(votes, votes[1:])) == sum(p.participant == name for p in t.turning_points)
    report = api.replay(store.runs_dir / "views", store=store)
    assert report.identical and report.turns_compared == 8, report.divergence


def test_a_run_saved_with_drawn_votes_by_the_previous_version_replays_identically(store_with_weights, registry):
    """The previous version drew every vote and wrote manifests of schema 1 without ``vote_draw``: such a run is
    read as drawn, so replaying it rebuilds the same ballots (drawn votes included) token for token."""
    store = store_with_weights
    run_dir = store.runs_dir / "old"
    t = api.start_run(QUESTION, OPTIONS, registry=registry, store=store, panel="tiny",
                      settings=DebateSettings(rounds=2, seed=11, early_stop=False, temperature=1.5, vote_draw=True),
                      run_dir=run_dir, with_moderator=False)
    drawn = [x for r in t.rounds for x in r.turns if x.valid and x.vote != x.view]
    for name in ("manifest.json", "transcript.json"):
        data = json.loads((run_dir / name).read_text())
        data["schema_version"] = 1
        del data["settings"]["vote_draw"]
        (run_dir / name).write_text(json.dumps(data))
    old = api.load_run(run_dir, store)
    assert old.settings.vote_draw is True
    report = api.replay(run_dir, store=store)
    assert report.identical and report.turns_compared == 8, report.divergence
    # Some ballots drew against their seat's view (at this seed two do), so a replay that took the views would
    # diverge: identical means the old run was read as drawn.
    assert drawn
