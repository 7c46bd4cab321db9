"""The copy measure on constructed debates: a pasted run is found and named, a run from the question or the
options is not copying, the seat's own earlier rationale counts, and the cards and JSON say so."""

import json

from localpanel.engine.scripted import ScriptedBackend
from localpanel.panel.copying import measure, words
from localpanel.show.render import render

from .test_protocol import ballot, env, run, script  # noqa: F401  (the four-seat scripted panel)

QUESTION = "Should a small team write its own web framework?"
OPTIONS = ["Yes", "No", "Only for learning"]
PEER = "Writing a small web framework can be an excellent way to learn about routing and request handling in depth."


def test_a_pasted_run_is_found_and_named():
    mine = "I agree that writing a small web framework can be an excellent way to learn about routing, so yes."
    c = measure("Ann", 2, mine, [("Bob", 1, PEER), ("own", 1, "No: it is not worth the time.")], [QUESTION, *OPTIONS])
    assert (c.words, c.source, c.source_round) == (14, "Bob", 1) and c.copied
    assert c.run == "writing a small web framework can be an excellent way to learn about routing"


def test_runs_from_the_question_and_options_are_not_copying():
    # "should a small team write its own web framework" (9 words) is the question's; a peer quoting it too is no copy
    peer = "Should a small team write its own web framework? Only for learning, I think."
    mine = "Should a small team write its own web framework? Not for production work."
    c = measure("Ann", 2, mine, [("Bob", 1, peer)], [QUESTION, *OPTIONS])
    assert c.words < 8 and not c.copied
    # ... but extending the question's words with the peer's own makes a run the question does not hold
    longer = "Should a small team write its own web framework only for learning i think"
    assert measure("Ann", 2, longer, [("Bob", 1, peer)], [QUESTION, *OPTIONS]).words == 14


def test_the_seats_own_earlier_rationale_counts():
    own = "Kubernetes adds an operations burden that a five person team cannot carry this year."
    c = measure("Ann", 2, own, [("Bob", 1, PEER), ("own", 1, own)], [QUESTION])
    assert c.source == "own" and c.words == len(words(own))


def test_the_cards_and_the_json_flag_a_copied_rationale(env):  # noqa: F811
    backend = script(ScriptedBackend(), [
        {"Ann": ballot("Yes", PEER), "Bob": ballot("No", "It costs more than it gives a small team."),
         "Cy": ballot("No", "Maintenance never ends."), "Di": ballot("Yes", "A framework teaches a lot.")},
        {"Ann": ballot("Yes", "Learning is the whole point, and it is cheap."), "Bob": ballot("Yes", PEER, who="Ann"),
         "Cy": ballot("No", "Maintenance never ends, so no."), "Di": ballot("Yes", "It teaches a great deal.")},
    ])
    t = run(env, backend, question=QUESTION, options=OPTIONS, rounds=2, early_stop=False)
    bob = next(c for c in t.copying if c.participant == "Bob")
    assert bob.round == 2 and bob.source == "Ann" and bob.words == len(words(PEER)) and bob.copied
    text = render(t, "text", width=400)
    assert f"copied: {bob.words} words in a row from Ann's rationale (round 1)" in text
    assert "Round 2: 1 of 4 rationales share 8 or more words in a row" in text
    for fmt in ("markdown", "html"):
        assert "copied: " in render(t, fmt) and "Copying" in render(t, fmt)
    data = json.loads(render(t, "json"))
    assert {c["participant"]: c["words"] for c in data["copying"]}["Bob"] == bob.words


def test_the_card_says_when_the_copy_guard_was_on(env):  # noqa: F811
    backend = script(ScriptedBackend(), [{n: ballot("Yes", f"{n} has a reason.") for n in ("Ann", "Bob", "Cy", "Di")}] * 2)
    t = run(env, backend, question=QUESTION, options=OPTIONS, rounds=2, early_stop=False, copy_guard=8)
    assert "Copy guard on: no rationale after round 1 could copy 8 words in a row" in render(t, "text", width=400)
    assert backend.requests[-1].copy_guard == 8 and PEER not in backend.requests[-1].avoid
    assert backend.requests[-1].copy_guard_by == "words" and backend.requests[-1].quotable == [QUESTION, *OPTIONS]
    assert any("has a reason." in a for a in backend.requests[-1].avoid)  # the earlier rationales are avoided
    assert not any(QUESTION in a for a in backend.requests[-1].avoid)  # the question may be quoted
    assert backend.requests[0].avoid is None  # nothing to copy in round 1


def test_with_the_guard_on_the_later_prompts_ask_for_the_seats_own_words(env):  # noqa: F811
    from localpanel.panel.protocol import OWN_WORDS

    seen = {}
    for guard in (None, 8):
        backend = script(ScriptedBackend(), [{n: ballot("Yes", f"{n} has a reason.") for n in ("Ann", "Bob", "Cy", "Di")}] * 2)
        run(env, backend, question=QUESTION, options=OPTIONS, rounds=2, early_stop=False, copy_guard=guard)
        seen[guard] = [r.messages[-1].content for r in backend.requests]
    assert not any(OWN_WORDS in m for m in seen[None])  # without the guard the prompts are as they were
    assert [OWN_WORDS in m for m in seen[8]] == [False] * 4 + [True] * 4  # round 2 only


def test_the_guard_is_on_by_default_and_runs_saved_before_read_as_off(env, tmp_path):  # noqa: F811
    from localpanel.panel.protocol import COPY_GUARD, DebateSettings
    from localpanel.runs.transcript import Manifest
    from localpanel.runs.rundir import RunDir

    assert DebateSettings().copy_guard == COPY_GUARD == 8
    backend = script(ScriptedBackend(), [{n: ballot("Yes", f"{n} has a reason.") for n in ("Ann", "Bob", "Cy", "Di")}] * 2)
    t = run(env, backend, question=QUESTION, options=OPTIONS, rounds=2, early_stop=False)
    assert t.settings.copy_guard == 8 and backend.requests[-1].copy_guard == 8
    # a manifest written before the guard existed has no copy_guard: it ran without, and resumes without
    run_dir = next(p for p in env[1].runs_dir.iterdir() if (p / "manifest.json").is_file())
    data = json.loads((run_dir / "manifest.json").read_text())
    del data["settings"]["copy_guard"]
    assert Manifest.model_validate(data).settings.copy_guard is None
    assert RunDir(run_dir).manifest().settings.copy_guard == 8  # the saved file itself says 8
    # one written while the guard counted tokens is read with the guard of tokens, which its turns then ask for
    data = json.loads((run_dir / "manifest.json").read_text())
    assert data["settings"]["copy_guard_by"] == "words"
    del data["settings"]["copy_guard_by"]
    assert Manifest.model_validate(data).settings.copy_guard_by == "tokens"
    backend = script(ScriptedBackend(), [{n: ballot("Yes", f"{n} has a reason.") for n in ("Ann", "Bob", "Cy", "Di")}] * 2)
    t = run(env, backend, question=QUESTION, options=OPTIONS, rounds=2, early_stop=False, copy_guard_by="tokens")
    assert backend.requests[-1].copy_guard_by == "tokens"
    assert "could copy 8 tokens (the guard of an earlier localpanel) in a row" in render(t, "text", width=400)


def test_copy_guard_0_turns_it_off_and_1_is_one_sentence(monkeypatch):
    from click.testing import CliRunner

    from localpanel.cli import cli

    seen = []
    monkeypatch.setattr("localpanel.cli.runs._run", lambda ctx, question, settings, opts: seen.append(settings))
    for args, guard in (([], 8), (["--copy-guard", "0"], None), (["--copy-guard", "12"], 12)):
        assert CliRunner().invoke(cli, ["debate", "Is it?", *args]).exit_code == 0
        assert seen[-1].copy_guard == guard
    out = CliRunner().invoke(cli, ["debate", "Is it?", "--copy-guard", "1"])
    assert out.exit_code == 2 and "--copy-guard takes 0 (off) or a run length of 2 to 64 words." in out.output
    assert "Traceback" not in out.output


def test_the_guard_and_the_measure_read_one_wording_and_a_quote_across_options_is_no_copy():
    """Stop 30's note: the measure counted a run crossing from one option to the next (as the prompt lists them) as
    the prompt's wording, while the guard let it be quoted. Both now read prompts.wording: no option, no question."""
    from localpanel.panel.copying import copying
    from localpanel.panel.prompts import wording
    from localpanel.panel.protocol import Turn
    from localpanel.weights.registry import Participant

    people = [Participant(name="Ann", model="m"), Participant(name="Bob", model="m")]
    options = ["Use a small web framework today", "Write your own framework from scratch"]
    said = "I would use a small web framework today write your own framework from scratch is slower."

    def turn(who, rnd, text):
        return Turn(participant=who, round=rnd, vote=options[0], rationale=text, option_order=options, seed=0)

    rounds = [[turn("Ann", 1, "Short and plain."), turn("Bob", 1, "Another plain reason.")],
              [turn("Ann", 2, said), turn("Bob", 2, "Nothing new here.")]]
    measured = copying("Which way?", options, people, rounds, 2, own_words=True)
    ann = next(c for c in measured if c.participant == "Ann")
    assert ann.words < 3, ann  # before, 11 words "from its prompt's wording": the two options as the prompt lists them
    lines = wording(people[0], 2, 2, "Ann", False, False, 2)
    assert not any(o in line for o in options for line in lines) and any("own words" in line for line in lines)
