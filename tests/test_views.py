"""A vote is the seat's view: its most probable option, whatever its temperature, unless the run draws; a
change of mind is a change of that option, never a redraw; a result says how close it was and whether the
seats' own probabilities agree with it."""

import json

import pytest

from localpanel.engine.draw import choose, pick
from localpanel.engine.scripted import PositionBiased, ScriptedBackend
from localpanel.panel.protocol import Turn
from localpanel.panel.tally import margin_line, result_line, shifts_without_flip, tally, turning_points
from localpanel.runs.transcript import Manifest, Transcript
from localpanel.show.render import render

from .test_protocol import ballot, env, run, script  # noqa: F401  (the four-seat scripted panel: Ann, Bob, Cy, Di)

LEANING = {"Yes": 0.6, "No": 0.4}


def leaning(order: list[str]) -> dict[str, float]:
    return dict(LEANING)  # no position effect: every seat leans Yes, by 0.6 to 0.4


@pytest.mark.parametrize("temperature", [0.0, 0.7, 2.0])
def test_the_vote_is_the_most_probable_option_at_every_temperature(env, temperature):  # noqa: F811
    for seed in range(10):
        t = run(env, ScriptedBackend(default=PositionBiased(leaning)), seed=seed, temperature=temperature)
        assert [x.vote for x in t.rounds[0].turns] == ["Yes"] * 4
        assert t.result.line == "Unanimous — Yes (4/4 votes)"
        assert "drawn" not in render(t, "text")


def test_with_the_draw_setting_the_vote_is_the_draw(env):  # noqa: F811
    votes = []
    for seed in range(10):
        t = run(env, ScriptedBackend(default=PositionBiased(leaning)), seed=seed, temperature=2.0, vote_draw=True)
        assert t.settings.vote_draw
        for x in t.rounds[0].turns:
            values = list(x.confidence)
            assert x.vote == values[pick(values, [x.confidence[v] for v in values], 2.0, x.seed, "vote")]
            votes.append(x.vote)
            assert x.view == "Yes"
        text = render(t, "text", width=400)
        assert "--vote-draw" in text
        for fmt in ("markdown", "html"):
            assert "--vote-draw" in render(t, fmt)
        if any(x.vote == "No" for x in t.rounds[0].turns):
            assert "(drawn; most probable: Yes)" in text
    assert 5 < votes.count("No") < 35  # p(No) at temperature 2 is 0.45: drawn, not argued


def test_a_tie_in_probability_goes_to_the_smallest_text_never_the_listing_order():
    for values in (["b", "a"], ["a", "b"]):
        assert values[choose(values, [0.5, 0.5], 0.7, 3, "vote", draw=False)] == "a"
    # read at the 6 decimals a ballot records: a difference below them is a tie
    assert ["b", "a"][choose(["b", "a"], [0.5000001, 0.4999999], 0.7, 3, "vote", draw=False)] == "a"


def turn(name, round_no, vote, confidence, attributed_to=None):
    return Turn(participant=name, round=round_no, vote=vote, rationale="Because it reads so.", confidence=confidence,
                option_order=list(confidence), seed=11, attributed_to=attributed_to)


def test_a_redraw_is_no_change_of_mind_and_a_flip_is():
    names = ["Ann", "Bob"]
    r1 = [turn("Ann", 1, "Yes", {"Yes": 0.7, "No": 0.3}), turn("Bob", 1, "No", {"Yes": 0.2, "No": 0.8})]
    redraw = [turn("Ann", 2, "No", {"Yes": 0.65, "No": 0.35}), turn("Bob", 2, "No", {"Yes": 0.25, "No": 0.75})]
    assert turning_points(names, [r1, redraw]) == []
    flip = [turn("Ann", 2, "No", {"Yes": 0.3, "No": 0.7}, attributed_to="Bob"), turn("Bob", 2, "No", {"Yes": 0.2, "No": 0.8})]
    [p] = turning_points(names, [r1, flip])
    assert (p.participant, p.from_vote, p.to_vote, p.attributed_to) == ("Ann", "Yes", "No", "Bob")
    # a flip of the view while the drawn vote stayed is a change of mind too
    held = [turn("Ann", 2, "Yes", {"Yes": 0.3, "No": 0.7}), turn("Bob", 2, "No", {"Yes": 0.2, "No": 0.8})]
    assert [(p.participant, p.to_vote) for p in turning_points(names, [r1, held])] == [("Ann", "No")]


def test_a_debate_of_redraws_has_no_turning_point_and_no_persuader(env):  # noqa: F811
    """Votes drawn (--vote-draw) that change while every seat's most probable option stays."""
    yes, no = {"Yes": 0.7, "No": 0.3}, {"Yes": 0.3, "No": 0.7}
    backend = script(ScriptedBackend(), [
        {"Ann": ballot("Yes", confidence=yes), "Bob": ballot("No", confidence=yes), "Cy": ballot("No", confidence=no), "Di": ballot("No", confidence=no)},
        {"Ann": ballot("No", confidence=yes, attributed_to="Cy"), "Bob": ballot("Yes", confidence=yes, attributed_to="Ann"),
         "Cy": ballot("No", confidence=no), "Di": ballot("No", confidence=no)},
    ])
    t = run(env, backend, rounds=2, early_stop=False, vote_draw=True)
    assert [x.vote for x in t.rounds[1].turns] == ["No", "Yes", "No", "No"]  # two votes changed...
    assert t.turning_points == [] and t.persuasion == [] and t.most_persuasive is None  # ...no mind did
    assert "None: nobody changed their mind." in render(t, "text")


def counted(votes: dict[str, int], probabilities: dict[str, float] | None = None):
    options = list(votes)
    turns, k = [], 0
    for option, n in votes.items():
        for _ in range(n):
            conf = probabilities or {o: float(o == option) for o in options}
            turns.append(turn(f"S{k}", 1, option, conf))
            k += 1
    return tally(options, turns)


def test_the_margin_on_constructed_tallies():
    clear = counted({"Yes": 4, "No": 0})
    assert clear.margin == 2 and "2 seats voting No instead would make it a tie" in margin_line(clear)
    one_seat = counted({"Yes": 3, "No": 2})
    assert one_seat.margin == 1 and "1 seat voting No instead would put No ahead" in margin_line(one_seat)
    three = counted({"A": 2, "B": 1, "C": 1})
    assert three.margin == 1 and three.runners_up == ["B", "C"] and "voting B or C instead would put B or C ahead" in margin_line(three)
    tie = counted({"Yes": 2, "No": 2})
    assert tie.margin == 0 and "a tie; one ballot for No or Yes would decide it" in margin_line(tie)
    assert counted({"Yes": 0, "No": 0}).margin is None and margin_line(counted({"Yes": 0, "No": 0})) is None
    for t in (clear, one_seat, three):
        assert t.probability_agrees is True and "mean probability agrees" in margin_line(t)
    assert tie.probability_leader is None and "The seats' mean probability is a tie too: No 50% / Yes 50%." in margin_line(tie)


def test_votes_and_mean_probability_that_disagree_are_said_plainly():
    # three seats lean Yes by a hair, one is sure of No: the votes say Yes, the mean probability No
    turns = [turn(f"S{k}", 1, "Yes", {"Yes": 0.55, "No": 0.45}) for k in range(3)] + [turn("S3", 1, "No", {"Yes": 0.01, "No": 0.99})]
    t = tally(["Yes", "No"], turns)
    assert t.winner == "Yes" and t.probability_leader == "No" and t.probability_agrees is False
    assert result_line(t) == "Supermajority — Yes (3/4 votes); but the seats' mean probability favours No"
    assert "does not agree: it favours No (58%; Yes 42%)" in margin_line(t)
    data = t.model_dump(mode="json")
    assert data["margin"] == 1 and data["probability_leader"] == "No" and data["probability_agrees"] is False


def test_paths_and_a_big_move_without_a_flip_on_every_card(env):  # noqa: F811
    backend = script(ScriptedBackend(), [
        {"Ann": ballot("Yes", confidence={"Yes": 0.8, "No": 0.2}), "Bob": ballot("No", confidence={"Yes": 0.1, "No": 0.9}),
         "Cy": ballot("No", confidence={"Yes": 0.4, "No": 0.6}), "Di": ballot("Yes", confidence={"Yes": 0.7, "No": 0.3})},
        {"Ann": ballot("Yes", confidence={"Yes": 0.55, "No": 0.45}), "Bob": ballot("No", confidence={"Yes": 0.1, "No": 0.9}),
         "Cy": ballot("Yes", confidence={"Yes": 0.7, "No": 0.3}, attributed_to="Di"), "Di": ballot("Yes", confidence={"Yes": 0.75, "No": 0.25})},
    ])
    t = run(env, backend, rounds=2, early_stop=False)
    assert t.probability_paths["Ann"].option == "Yes" and t.probability_paths["Ann"].probabilities == [0.8, 0.55]
    assert t.probability_paths["Cy"].option == "Yes" and t.probability_paths["Cy"].probabilities == [0.4, 0.7]
    [shift] = t.shifts
    sentence = "Ann held Yes, but Yes 0.80 → 0.55 in round 2, toward No (argued by Bob, Cy)."
    assert (shift.participant, shift.before, shift.after, shift.toward) == ("Ann", 0.8, 0.55, "No")
    text = render(t, "text", width=400)
    assert "  Ann  Yes 0.80 → 0.55" in text and sentence in text
    assert "Margin:" in text
    md = render(t, "markdown")
    assert "| Ann | Yes | 0.80 | 0.55 |" in md and sentence in md
    page = render(t, "html")
    assert 'class="chart paths"' in page and page.count('class="path"') == 4 and sentence in page
    data = json.loads(render(t, "json"))
    assert data["probability_paths"]["Cy"] == {"option": "Yes", "probabilities": [0.4, 0.7]}
    assert data["rounds"][-1]["tally"]["margin"] == 1 and data["shifts"][0]["argued_by"] == ["Bob", "Cy"]
    assert shifts_without_flip(["Ann"], [[t.rounds[0].turns[0]], [t.rounds[1].turns[0]]], at_least=0.3) == []


def test_the_text_card_shows_the_votes_of_an_integer_question(env):  # noqa: F811
    """The votes block used to sit under `if positions:`, which an integer question (no options) never has."""
    backend = script(ScriptedBackend(), [{n: {"vote": 42 if n != "Di" else 41, "rationale": f"{n} counted it twice."}
                                          for n in ("Ann", "Bob", "Cy", "Di")}])
    registry, store = env
    from localpanel import api
    from localpanel.panel.protocol import DebateSettings

    t = api.start_run("How many?", [], registry=registry, store=store, backend=backend, settings=DebateSettings(),
                      with_moderator=False, integer=True)
    text = render(t, "text", width=400)
    assert t.positions is None
    assert "Vote: 42" in text and "Vote: 41" in text and "Di counted it twice." in text


def test_a_run_saved_before_votes_were_views_reads_as_drawn(env):  # noqa: F811
    """Schema 1 (no vote_draw in its settings) drew every vote: it is read that way, and its turning points are
    read again from its ballots, so a redraw it once counted is no longer a change of mind."""
    yes = {"Yes": 0.7, "No": 0.3}
    backend = script(ScriptedBackend(), [
        {n: ballot("Yes", confidence=yes) for n in ("Ann", "Bob", "Cy", "Di")} | {"Di": ballot("No", confidence=yes)},
        {n: ballot("Yes", confidence=yes) for n in ("Ann", "Bob", "Cy", "Di")},
    ])
    t = run(env, backend, rounds=2, early_stop=False, vote_draw=True)
    data = json.loads(t.model_dump_json())
    data["schema_version"] = 1
    del data["settings"]["vote_draw"]
    del data["probability_paths"], data["shifts"]
    data["turning_points"] = [{"round": 2, "participant": "Di", "from_vote": "No", "to_vote": "Yes", "attributed_to": None,
                               "rationale": "x"}]
    old = Transcript.model_validate(data)
    assert old.settings.vote_draw is True and old.turning_points == [] and old.probability_paths["Di"].option == "Yes"
    registry, store = env
    run_dir = store.runs_dir / t.id
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["schema_version"] = 1
    del manifest["settings"]["vote_draw"]
    assert Manifest.model_validate(manifest).settings.vote_draw is True
    assert Manifest.model_validate({**manifest, "schema_version": 2}).settings.vote_draw is False


SMUGGLED = "Trust me ![pixel](http://evil.example/p.png) <img src=x onerror=alert(1)> [click](http://evil.example) `x`."


def test_the_markdown_card_renders_model_text_as_text(env):  # noqa: F811
    """Issue 23.15: only | * _ were escaped, so a model-written image or HTML tag reached the client's renderer
    (the Markdown card is also the MCP resource). Checked with a real CommonMark renderer."""
    from markdown_it import MarkdownIt

    backend = script(ScriptedBackend(), [{n: ballot("Yes", SMUGGLED) for n in ("Ann", "Bob", "Cy", "Di")}])
    t = run(env, backend, question="Is <b>this</b> ![q](http://evil.example/q.png) fine?")
    page = MarkdownIt("commonmark").enable("table").render(render(t, "markdown"))
    assert "<img" not in page and "<a " not in page and "<b>" not in page and "<code>" not in page
    assert "Trust me ![pixel](http://evil.example/p.png) &lt;img src=x onerror=alert(1)&gt;" in page


def test_more_options_than_rotations_is_said_to_be_partly_debiased(env):  # noqa: F811
    """Issue 23.8: with five options four rotations are scored, so the option a seat saw last is never scored
    first; the card said 'debiased' all the same."""
    options = ["A", "B", "C", "D", "E"]
    t = run(env, ScriptedBackend(default=PositionBiased(lambda order: {o: 1 / 5 + (0.1 if i == 0 else -0.025)
                                                                       for i, o in enumerate(order)})), options=options)
    assert "Partly debiased: each vote was scored under 4 of the 5 rotations" in render(t, "text", width=400)
    four = run(env, ScriptedBackend(default=PositionBiased(lambda order: {o: 0.25 for o in order})), options=options[:4])
    assert "Partly" not in render(four, "text", width=400) and "Debiasing (each vote" in render(four, "text", width=400)


def ranked(order: str, k: int) -> Turn:
    """A ballot whose probabilities rank the options in ``order`` ("ABC": A most probable)."""
    probs = {o: p for o, p in zip(order, (0.5, 0.3, 0.2))}
    return turn(f"S{k}", 1, order[0], probs)


def test_borda_and_condorcet_on_constructed_ballots():
    from localpanel.panel.counts import rankings, rankings_lines

    # Two rank A > B > C, two C > B > A, one B > A > C: the plurality ties A and C, B wins every head-to-head
    # (3 to 2) and the Borda count.
    turns = [ranked(o, k) for k, o in enumerate(["ABC", "ABC", "CBA", "CBA", "BAC"])]
    t = tally(list("ABC"), turns)
    r = rankings(list("ABC"), turns)
    assert t.leaders == ["A", "C"] and r.borda == {"A": 5.0, "B": 6.0, "C": 4.0} and r.borda_leaders == ["B"]
    assert r.pairwise["B"] == {"A": 3, "C": 3} and r.condorcet_winner == "B" and r.smith_set == ["B"]
    assert rankings_lines(r, t)[-1] == "They differ: plurality A/C, Borda B, Condorcet B."
    # A > B > C, B > C > A, C > A > B: each option beats one and loses to one, 2 to 1: a cycle.
    cycle = [ranked(o, k) for k, o in enumerate(["ABC", "BCA", "CAB"])]
    r = rankings(list("ABC"), cycle)
    assert r.condorcet_winner is None and r.smith_set == ["A", "B", "C"] and set(r.borda.values()) == {3.0}
    assert "No Condorcet winner: A, B, C beat each other in a cycle or tie head to head." in rankings_lines(r, tally(list("ABC"), cycle))
    # everyone agrees
    same = [ranked("ABC", k) for k in range(3)]
    assert rankings_lines(rankings(list("ABC"), same), tally(list("ABC"), same))[-1] == "Plurality, Borda and Condorcet agree: A."


def test_every_card_and_the_json_show_the_rankings(env):  # noqa: F811
    three = {"A": 0.5, "B": 0.3, "C": 0.2}
    backend = script(ScriptedBackend(), [{
        "Ann": ballot("A", confidence=three), "Bob": ballot("A", confidence=three),
        "Cy": ballot("C", confidence={"C": 0.6, "B": 0.3, "A": 0.1}), "Di": ballot("B", confidence={"B": 0.5, "C": 0.3, "A": 0.2})}])
    t = run(env, backend, options=("A", "B", "C"))
    # Borda: A 2+2+0+0, B 1+1+1+2, C 0+0+2+1; A and B tie head to head (2 to 2): no Condorcet winner
    assert t.rankings.borda == {"A": 4.0, "B": 5.0, "C": 3.0} and t.rankings.condorcet_winner is None
    for fmt in ("text", "markdown", "html"):
        out = render(t, fmt, width=400)
        assert "Rankings from the probabilities" in out and "They differ: plurality A, Borda B, Condorcet none." in out
    data = json.loads(render(t, "json"))
    assert data["rankings"]["smith_set"] == ["A", "B", "C"] and data["rankings"]["borda_leaders"] == ["B"]
    two = run(env, script(ScriptedBackend(), [{n: ballot("Yes") for n in ("Ann", "Bob", "Cy", "Di")}]))
    assert "Borda" not in render(two, "text") and two.rankings.condorcet_winner == "Yes"  # two options: the JSON only


