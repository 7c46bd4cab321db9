"""Runs made by the previous release (0.2.0, checked in under fixtures/made-by-0.2.0) replay identically here:
a tiny-panel debate with its moderator, and an integer debate whose votes that release sampled at the seat's
temperature (decoder 2), which this one reads from the manifest and decodes the same way again."""

import shutil
from pathlib import Path

import pytest

from localpanel import api

pytestmark = pytest.mark.real

MADE_BY_0_2_0 = Path(__file__).parent / "fixtures" / "made-by-0.2.0"


@pytest.mark.parametrize("name, turns", [("debate-0.2.0", 8), ("integer-0.2.0", 8)])
def test_a_run_made_by_the_previous_release_replays_identically(store_with_weights, name, turns):
    store = store_with_weights
    run_dir = store.runs_dir / name
    shutil.copytree(MADE_BY_0_2_0 / name, run_dir)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    t = api.load_run(run_dir, store)
    assert t.settings.decoder == 2 and t.environment["localpanel"] == "0.2.0"
    report = api.replay(run_dir, store=store)
    assert report.identical and report.turns_compared == turns, report.divergence
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # a replay only reads
