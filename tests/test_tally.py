import pytest

from localpanel.panel.protocol import Turn
from localpanel.panel.tally import most_persuasive, persuasion_graph, result_line, tally, turning_points, vote_matrix

OPTIONS = ["Yes", "No", "Maybe"]


def turn(name, vote, round_no=1, attributed_to=None, confidence=None, failure=None):
    return Turn(participant=name, round=round_no, vote=None if failure else vote, rationale=f"{name} says {vote}",
                attributed_to=attributed_to, confidence=confidence or {}, option_order=OPTIONS, seed=0, failure=failure)


def votes(*vs):
    return [turn(f"P{i}", v, failure="cut off" if v is None else None) for i, v in enumerate(vs)]


@pytest.mark.parametrize(
    "cast, label, winner, line",
    [
        (["Yes"] * 4, "unanimous", "Yes", "Unanimous — Yes (4/4 votes)"),
        (["No", "No", "No", "Yes", "Yes"], "majority", "No", "Majority — No (3/5 votes)"),
        (["No", "No", "Yes"], "supermajority", "No", "Supermajority — No (2/3 votes)"),
        (["Yes", "Yes", "No", "No"], "tie", None, "Tie — No/Yes (2/2)"),  # tied leaders by name, not by typing order
        (["Yes", "No", "Maybe"], "tie", None, "Tie — Maybe/No/Yes (1/1/1)"),
        (["Yes", "Yes", "No", "Maybe", "Maybe", "Yes", "No"], "plurality", "Yes", "Plurality — Yes (3/7 votes)"),
        (["Yes", "Yes", "Yes", None], "supermajority", "Yes", "Supermajority — Yes (3/4 votes), 1 abstained"),
        ([None, None], "no votes", None, "No votes — all 2 ballots failed"),
    ],
)
def test_labels_and_result_lines(cast, label, winner, line):
    t = tally(OPTIONS, votes(*cast))
    assert (t.label, t.winner, result_line(t)) == (label, winner, line)
    assert sum(t.counts.values()) + t.abstentions == len(cast)


def test_shares_and_probability_weighted_shares():
    turns = [
        turn("A", "Yes", confidence={"Yes": 0.9, "No": 0.1, "Maybe": 0.0}),
        turn("B", "No", confidence={"Yes": 0.3, "No": 0.6, "Maybe": 0.1}),
        turn("C", None, failure="cut off"),
    ]
    t = tally(OPTIONS, turns)
    assert t.shares == {"Yes": pytest.approx(1 / 3, abs=1e-6), "No": pytest.approx(1 / 3, abs=1e-6), "Maybe": 0.0}
    assert t.weighted == {"Yes": pytest.approx(0.6), "No": pytest.approx(0.35), "Maybe": pytest.approx(0.05)}


def test_turning_points_graph_and_most_persuasive():
    names = ["Ann", "Bob", "Cy"]
    rounds = [
        [turn("Ann", "Yes"), turn("Bob", "No"), turn("Cy", "No")],
        [turn("Ann", "Yes", 2), turn("Bob", "Yes", 2, attributed_to="Ann"), turn("Cy", None, 2, failure="cut off")],
        [turn("Ann", "Yes", 3), turn("Bob", "Yes", 3), turn("Cy", "Yes", 3, attributed_to="Ann")],
        [turn("Ann", "No", 4, attributed_to="Cy"), turn("Bob", "Yes", 4), turn("Cy", "Yes", 4)],
    ]
    points = turning_points(names, rounds)
    assert [(p.round, p.participant, p.from_vote, p.to_vote, p.attributed_to) for p in points] == [
        (2, "Bob", "No", "Yes", "Ann"),
        (3, "Cy", "No", "Yes", "Ann"),  # measured against Cy's last valid vote (round 1)
        (4, "Ann", "Yes", "No", "Cy"),
    ]
    assert points[0].rationale == "Bob says Yes"
    graph = persuasion_graph(points)
    assert [(e.source, e.target, e.count) for e in graph] == [("Ann", "Bob", 1), ("Ann", "Cy", 1), ("Cy", "Ann", 1)]
    assert most_persuasive(graph) == "Ann"
    assert vote_matrix(names, rounds) == {"Ann": ["Yes", "Yes", "Yes", "No"], "Bob": ["No", "Yes", "Yes", "Yes"], "Cy": ["No", None, "Yes", "Yes"]}


def test_nobody_is_most_persuasive_on_a_tie_or_without_credit():
    a = turning_points(["A", "B"], [[turn("A", "Yes"), turn("B", "No")], [turn("A", "No", 2, "B"), turn("B", "Yes", 2, "A")]])
    assert most_persuasive(persuasion_graph(a)) is None
    b = turning_points(["A"], [[turn("A", "Yes")], [turn("A", "No", 2)]])
    assert len(b) == 1 and persuasion_graph(b) == [] and most_persuasive([]) is None
