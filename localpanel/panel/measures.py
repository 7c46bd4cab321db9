"""What the panel measures from a run's ballots, as one typed object: the transcript stores it, the card shows it.

``measure(...)`` is the only place the figures are derived: the vote matrix, turning points, who moved whom, the
probability paths and the big moves that did not flip a view, the rankings, the weighted count, copying and the
position effect. A saved run's figures are read again with the same call (``runs/transcript.py``).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from localpanel.panel.copying import Copied, copying
from localpanel.panel.counts import Rankings, WeightedCount, rankings, weighted_count
from localpanel.panel.tally import (
    Influence,
    PositionEffect,
    ProbabilityPath,
    Shift,
    TurningPoint,
    most_persuasive,
    persuasion_graph,
    position_effect,
    probability_paths,
    shifts_without_flip,
    turning_points,
    vote_matrix,
)
from localpanel.panel.terms import DebateSettings, Turn


class Measures(BaseModel):
    """Every figure a run's ballots give, beside the counts of each round."""

    vote_matrix: dict[str, list[str | None]]
    turning_points: list[TurningPoint]
    persuasion: list[Influence]
    most_persuasive: str | None
    # Each seat's probability for the option it ended on, round by round; and the big moves that did not flip it.
    probability_paths: dict[str, ProbabilityPath] = Field(default_factory=dict)
    shifts: list[Shift] = Field(default_factory=list)
    # The final round's ballots ranked by their probabilities: Borda and Condorcet beside the plurality.
    rankings: Rankings | None = None
    # With calibrated weights (--weights): the final round counted with them, beside the plain count.
    weighted_count: WeightedCount | None = None
    # For every ballot after round 1: the longest run of words its rationale shares with what its seat had read.
    copying: list[Copied] = Field(default_factory=list)
    positions: PositionEffect | None = None


def changes_of_mind(names: list[str], rounds: list[list[Turn]]) -> dict:
    """The figures that follow a seat's view over the rounds (what a transcript saved before votes were views reads
    again from its ballots)."""
    points = turning_points(names, rounds)
    graph = persuasion_graph(points)
    return dict(turning_points=points, persuasion=graph, most_persuasive=most_persuasive(graph),
                probability_paths=probability_paths(names, rounds), shifts=shifts_without_flip(names, rounds))


def measure(question: str, options: list[str], counted: list[str], participants: list, rounds: list[list[Turn]],
            settings: DebateSettings, seat_models: dict[str, str]) -> Measures:
    """The measures of one run. ``options`` are the question's (empty for an integer question), ``counted`` the
    options its counts are over (an integer question's answers given); ``participants`` the seats as the panel
    seated them; ``seat_models`` each seat's model, for the weighted count."""
    names = [p.name for p in participants]
    last = rounds[-1] if rounds else []
    weights = settings.seat_weights
    return Measures(
        vote_matrix=vote_matrix(names, rounds),
        **changes_of_mind(names, rounds),
        rankings=rankings(options, last) if rounds else None,
        weighted_count=weighted_count(counted, last, {
            n: weights.get(seat_models[n], 1.0) for n in names}, settings.weights_from) if weights and rounds else None,
        copying=copy_measure(question, options, participants, rounds, settings),
        positions=position_effect(options, [t for r in rounds for t in r], {
            p.name: settings.vote_temperature(p.temperature) for p in participants}),
    )


def copy_measure(question: str, options: list[str], participants: list, rounds: list[list[Turn]],
                 settings: DebateSettings) -> list[Copied]:
    return copying(question, options, participants, rounds, settings.rounds, not options, settings.reason_first,
                   settings.anonymous, bool(settings.copy_guard), settings.layout)

