"""Polls and debates on a scripted backend: every derived figure checked against known vote sequences."""

import json
import subprocess
import sys

import pytest

from localpanel import api
from localpanel.engine.grammar import NULL_WHEN
from localpanel.engine.scripted import Failed, ScriptedBackend
from localpanel.errors import InputError, NotPulledError, UnknownPanelError
from localpanel.panel.protocol import DebateSettings, Question
from localpanel.runs.rundir import RunDir
from localpanel.show.render import render
from localpanel.weights.registry import load_registry
from localpanel.weights.store import Store

from .ggufdata import sha, tiny_gguf

NAMES = ["Ann", "Bob", "Cy", "Di"]


@pytest.fixture
def env(tmp_path):
    """A registry of two tiny models (pulled from local files) and a four-seat panel."""
    files = {}
    for name in ("alpha", "beta"):
        data = tiny_gguf(name)
        (tmp_path / f"{name}.gguf").write_bytes(data)
        files[name] = sha(data)
    seats = "\n".join(
        f"      - {{name: {n}, model: {'alpha' if i < 2 else 'beta'}, seed: {i + 1}, persona: Persona of {n}.}}"
        for i, n in enumerate(NAMES)
    )
    (tmp_path / "models.yaml").write_text(
        "models:\n"
        + "".join(f"  {m}:\n    sha256: {s}\n    sources: [file://{tmp_path / (m + '.gguf')}]\n" for m, s in files.items())
        + f"panels:\n  default:\n    moderator: alpha\n    participants:\n{seats}\n"
    )
    registry = load_registry(tmp_path / "models.yaml")
    store = Store()
    for spec in registry.models.values():
        store.pull(spec)
    return registry, store


def ballot(vote, why="", who=None, **extra):
    b = {"vote": vote, "rationale": why or f"My reason for {vote} is good."}
    if who is not False:
        b["attributed_to"] = who
    b.update(extra)
    return b


def script(backend, rounds):
    """rounds: a list of {name: ballot} per round."""
    for r, by_name in enumerate(rounds):
        for name, b in by_name.items():
            if isinstance(b, dict) and r == 0:
                b = {k: v for k, v in b.items() if k != "attributed_to"}
            backend.enqueue(name, b)
    return backend


def run(env, backend, question="Is it?", options=("Yes", "No"), **settings):
    registry, store = env
    return api.start_run(question, list(options), registry=registry, store=store, backend=backend,
                         settings=DebateSettings(**settings), with_moderator=False)


def test_poll_counts_labels_and_saves_everything(env):
    backend = script(ScriptedBackend(), [{"Ann": ballot("Yes", confidence={"Yes": 0.8, "No": 0.2}),
                                          "Bob": ballot("Yes"), "Cy": ballot("No"), "Di": ballot("Yes")}])
    t = run(env, backend, seed=3)
    assert t.kind == "poll" and len(t.rounds) == 1
    assert t.result.line == "Supermajority — Yes (3/4 votes)"
    assert t.result.counts == {"Yes": 3, "No": 1}
    ann = t.rounds[0].turns[0]
    assert ann.participant == "Ann" and ann.confidence == {"Yes": 0.8, "No": 0.2}
    run_dir = RunDir(env[1].runs_dir / t.id)
    data = json.loads(run_dir.transcript_path.read_text())
    for key in ("question", "options", "participants", "rounds", "result", "environment", "settings", "runtime"):
        assert key in data
    assert {"name", "model", "sha256"} <= set(data["participants"][0])
    assert {"participant", "vote", "rationale", "confidence", "prompt_tokens", "completion_tokens", "seconds"} <= set(data["rounds"][0]["turns"][0])
    assert set(data["result"]) >= {"label", "winner", "counts"}
    assert data["participants"][2]["sha256"] == env[0].model("beta").sha256
    assert len(run_dir.journal()[0]) == 4
    assert json.loads(run_dir.manifest_path.read_text())["settings"]["seed"] == 3


def test_poll_participants_do_not_see_each_other_and_options_are_shuffled(env):
    backend = ScriptedBackend(default=lambda req: ballot("Yes", who=False))
    t = run(env, backend, options=("Alpha", "Beta", "Gamma", "Delta"), seed=11)
    for req in backend.requests:
        text = "\n".join(m.content for m in req.messages)
        assert "Alpha" in text and not any(f"{n} voted" in text for n in NAMES)
        assert [m.role for m in req.messages] == ["system", "user"]
    orders = [turn.option_order for turn in t.rounds[0].turns]
    assert all(sorted(o) == ["Alpha", "Beta", "Delta", "Gamma"] for o in orders)
    assert len({tuple(o) for o in orders}) > 1
    prompt = backend.requests[0].messages[1].content
    listed = [line[2:] for line in prompt.splitlines() if line.startswith("- ")]
    assert listed == t.rounds[0].turns[[x.participant for x in t.rounds[0].turns].index(backend.requests[0].key)].option_order


def test_same_seed_same_prompts_other_seed_other_order(env):
    orders = []
    for seed in (5, 5, 6):
        backend = ScriptedBackend(default=lambda req: ballot("Yes", who=False))
        t = run(env, backend, options=("A", "B", "C", "D", "E"), seed=seed)
        orders.append([tuple(x.option_order) for x in t.rounds[0].turns] + [x.seed for x in t.rounds[0].turns])
    assert orders[0] == orders[1] and orders[0] != orders[2]


def test_debate_turning_points_graph_and_stop_at_consensus(env):
    backend = script(ScriptedBackend(), [
        {"Ann": ballot("Yes"), "Bob": ballot("No"), "Cy": ballot("No"), "Di": ballot("Yes")},
        {"Ann": ballot("Yes"), "Bob": ballot("Yes", "Ann convinced me.", "Ann"), "Cy": ballot("No"), "Di": ballot("Yes")},
        {"Ann": ballot("Yes"), "Bob": ballot("Yes"), "Cy": ballot("Yes", "Bob is right.", "Bob"), "Di": ballot("Yes")},
    ])
    t = run(env, backend, rounds=5)
    assert t.stopped_because == "consensus"
    assert [r.tally.label for r in t.rounds] == ["tie", "supermajority", "unanimous"]
    assert t.result.line == "Consensus after 3 rounds · Unanimous — Yes (4/4 votes)"
    assert [(p.round, p.participant, p.from_vote, p.to_vote, p.attributed_to, p.rationale) for p in t.turning_points] == [
        (2, "Bob", "No", "Yes", "Ann", "Ann convinced me."), (3, "Cy", "No", "Yes", "Bob", "Bob is right.")]
    assert [(e.source, e.target, e.count) for e in t.persuasion] == [("Ann", "Bob", 1), ("Bob", "Cy", 1)]
    assert t.most_persuasive is None  # one credit each
    assert t.vote_matrix["Cy"] == ["No", "No", "Yes"]


def test_debate_stops_when_a_round_changes_no_vote(env):
    first = {"Ann": ballot("Yes"), "Bob": ballot("No"), "Cy": ballot("No"), "Di": ballot("Yes")}
    t = run(env, script(ScriptedBackend(), [first, first]), rounds=4)
    assert t.stopped_because == "stable" and len(t.rounds) == 2
    assert t.result.line.startswith("No agreement after 2 rounds · Tie — No/Yes (2/2)")


def test_debate_runs_every_round_without_early_stop(env):
    same = {n: ballot("Yes") for n in NAMES}
    t = run(env, script(ScriptedBackend(), [same, same, same]), rounds=3, early_stop=False)
    assert t.stopped_because == "max_rounds" and len(t.rounds) == 3 and t.turning_points == []


def test_later_rounds_show_the_others_and_constrain_attribution(env):
    backend = script(ScriptedBackend(), [
        {"Ann": ballot("Yes", "Ann's first reason."), "Bob": ballot("No", "Bob's first reason."),
         "Cy": Failed("cut off at 256 tokens"), "Di": ballot("No", "Di's first reason.")},
        {n: ballot("No") for n in NAMES},
    ])
    t = run(env, backend, rounds=2)
    ann_r2 = next(r for r in backend.requests if r.key == "Ann" and "Round 2" in r.messages[-1].content)
    seen = ann_r2.messages[-1].content
    assert "Bob voted No: Bob's first reason." in seen and "Di voted No: Di's first reason." in seen
    assert "Cy abstained" in seen and "Ann's first reason" not in seen
    assert [m.role for m in ann_r2.messages] == ["system", "user", "assistant", "user"]
    assert ann_r2.messages[2].content == json.dumps({"vote": "Yes", "rationale": "Ann's first reason."})
    who = ann_r2.schema_["properties"]["attributed_to"]
    assert who["anyOf"][0]["enum"] == ["Bob", "Cy", "Di"]
    assert who[NULL_WHEN] == {"field": "vote", "equals": "Yes"}
    assert t.rounds[0].tally.abstentions == 1 and t.rounds[0].turns[2].failure == "cut off at 256 tokens"
    peer_order = t.rounds[1].turns[0].peer_order
    assert sorted(peer_order) == ["Bob", "Cy", "Di"]


def test_anonymous_debates_use_panelist_letters_and_map_credit_back(env):
    backend = script(ScriptedBackend(), [
        {"Ann": ballot("Yes"), "Bob": ballot("No"), "Cy": ballot("No"), "Di": ballot("No")},
        {"Ann": ballot("No", "B was right.", "Panelist B"), "Bob": ballot("No"), "Cy": ballot("No"), "Di": ballot("No")},
    ])
    t = run(env, backend, rounds=2, anonymous=True)
    seen = "\n".join(m.content for m in backend.requests[-1].messages)
    assert "Panelist A voted Yes" in seen and "Ann" not in seen.replace("Ann's", "")
    assert t.turning_points[0].attributed_to == "Bob"
    assert [(e.source, e.target) for e in t.persuasion] == [("Bob", "Ann")]


def test_a_failed_or_invalid_ballot_is_recorded_never_dropped(env):
    backend = script(ScriptedBackend(), [{"Ann": ballot("Perhaps"), "Bob": "not json at all",
                                          "Cy": Failed("cut off at 256 tokens"), "Di": ballot("No")}])
    t = run(env, backend)
    failures = [x.failure for x in t.rounds[0].turns]
    assert failures[0].startswith("the ballot did not validate") and failures[1].startswith("the ballot did not validate")
    assert failures[2] == "cut off at 256 tokens" and failures[3] is None
    assert t.result.line == "Plurality — No (1/4 votes), 3 abstained"


def test_moderator_writes_each_case_from_that_options_rationales_alone(env):
    registry, store = env
    backend = script(ScriptedBackend(), [{"Ann": ballot("Yes", "Because of A."), "Bob": ballot("No", "Because of B."),
                                          "Cy": ballot("No", "Because of C."), "Di": ballot("Yes", "Because of D.")}])
    # The passages are asked in one order whatever order the options were typed in (sorted: No, then Yes).
    backend.enqueue("[moderator]", {"strongest": 2, "case": "Bob and Cy argued that B and C hold."},
                    {"strongest": 4, "case": "Ann and Di argued that A and D hold."})
    t = api.start_run("Is it?", ["Yes", "No"], registry=registry, store=store, backend=backend)
    no, yes = backend.requests[-2:]
    assert yes.schema_["properties"]["strongest"]["enum"] == [1, 4]
    assert no.schema_["properties"]["strongest"]["enum"] == [2, 3]
    yes_prompt, no_prompt = yes.messages[-1].content, no.messages[-1].content
    assert "Because of A." in yes_prompt and "Because of D." in yes_prompt
    assert "Because of B." not in yes_prompt and "Because of C." not in yes_prompt
    assert "Because of B." in no_prompt and "Because of A." not in no_prompt
    assert {o: (a.participant, a.text) for o, a in t.strongest_arguments.items()} == {"Yes": ("Di", "Because of D."), "No": ("Bob", "Because of B.")}
    # Most votes first, ties by name: the summary reads the same whatever order the options were typed in.
    assert t.moderator.facts == "The panel was split: 2 voted No, 2 voted Yes."
    assert t.summary == ("The panel was split: 2 voted No, 2 voted Yes. The case for No: Bob and Cy argued that B and C hold. "
                         "The case for Yes: Ann and Di argued that A and D hold.")
    assert "The case for Yes (the moderator, from 2 rationales):" in render(t, "text")


def test_an_option_argued_once_is_quoted_and_facts_tell_who_moved(env):
    registry, store = env
    backend = script(ScriptedBackend(), [
        {"Ann": ballot("Yes", "Because of A."), "Bob": ballot("No", "Because of B."), "Cy": ballot("No", "Because of C."), "Di": ballot("No", "Because of D.")},
        {"Ann": ballot("Yes", "Still because of A.", None), "Bob": ballot("Yes", "A convinced me.", "Ann"),
         "Cy": ballot("No", "Still because of C.", None), "Di": ballot("No", "Still because of D.", None)},
    ])
    backend.enqueue("[moderator]", {"strongest": 7, "case": "Cy and Di kept to their points C and D."},
                    {"strongest": 6, "case": "Ann held, and Bob came round to her view."})  # asked sorted: No, Yes
    t = api.start_run("Is it?", ["Yes", "No", "Maybe"], registry=registry, store=store, backend=backend,
                      settings=DebateSettings(rounds=2))
    assert t.moderator.facts == ("After 2 rounds, the panel was split: 2 voted No, 2 voted Yes. "
                                 "In round 2, Bob moved from No to Yes, crediting Ann.")
    assert [p.option for p in t.moderator.passages] == ["No", "Yes"]  # nobody argued Maybe: no passage
    # Where the debate ended: each final voter's latest rationale (Bob's earlier case for No is not read).
    assert [p.arguments for p in t.moderator.passages] == [[7, 8], [5, 6]] and not any(p.failure for p in t.moderator.passages)
    assert len([r for r in backend.requests if r.key.startswith("[moderator]")]) == 2


def test_a_single_rationale_needs_no_model(env):
    registry, store = env
    backend = script(ScriptedBackend(), [{"Ann": ballot("Yes", "Because of A."), "Bob": ballot("No", "Because of B."),
                                          "Cy": ballot("No", "Because of C."), "Di": ballot("No", "Because of D.")}])
    backend.enqueue("[moderator]", {"strongest": 3, "case": "Three panelists said no for B, C and D."})
    t = api.start_run("Is it?", ["Yes", "No"], registry=registry, store=store, backend=backend)
    assert len([r for r in backend.requests if r.key.startswith("[moderator]")]) == 1
    yes = t.moderator.passages[1]  # No, held by three, comes first
    assert (yes.option, yes.by_model, yes.text, yes.strongest.participant) == ("Yes", False, "Because of A.", "Ann")
    assert t.moderator.facts == "3 of 4 panelists voted No (supermajority); 1 voted Yes."


def test_runs_started_at_once_never_collide(tmp_path):
    """Many processes claim run directories under one name at the same moment: each gets its own."""
    script_text = (
        "import sys\nfrom pathlib import Path\nfrom localpanel.runs.rundir import RunDir\n"
        "from unittest import mock\nm = mock.MagicMock()\nm.model_dump.return_value = {}\n"
        "for _ in range(15):\n    print(RunDir.create_unique(Path(sys.argv[1]), 'same-second-question', m).path.name)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script_text, str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    names = [line for p in procs for line in p.communicate(timeout=60)[0].split()]
    assert all(p.returncode == 0 for p in procs)
    assert len(names) == 60 and len(set(names)) == 60
    assert all((tmp_path / n / "manifest.json").is_file() for n in names)


def test_resume_continues_from_the_journal_without_touching_it(env):
    registry, store = env
    rounds = [{n: ballot("Yes" if i % 2 else "No") for i, n in enumerate(NAMES)},
              {n: ballot("No") for n in NAMES}]

    class Crash(ScriptedBackend):
        def generate(self, request, on_token=None):
            if len(self.requests) == 5:
                raise KeyboardInterrupt
            return super().generate(request, on_token)

    run_dir = store.runs_dir / "crashy"
    with pytest.raises(KeyboardInterrupt):
        api.start_run("Is it?", ["Yes", "No"], registry=registry, store=store, backend=script(Crash(), rounds),
                      settings=DebateSettings(rounds=2), run_dir=run_dir, with_moderator=False)
    journal = RunDir(run_dir).journal_path
    before = journal.read_bytes()
    assert before.count(b"\n") == 5
    journal.write_bytes(before + b'{"kind": "turn", "participant": "Bob", "rou')  # torn by the crash
    rest = ScriptedBackend()
    script(rest, [{}, {n: ballot("No") for n in NAMES}])
    t = api.resume(run_dir, store=store, backend=rest)
    assert journal.read_bytes().startswith(before)
    assert len(rest.requests) == 3  # only the turns the journal did not have
    assert len(t.rounds) == 2 and t.result.line.endswith("Unanimous — No (4/4 votes)")
    assert api.resume(run_dir, store=store, backend=ScriptedBackend()).id == t.id  # finished: just shown


@pytest.mark.parametrize(
    "question, options, message",
    [
        ("Q?", ["Yes"], "A vote needs at least 2 options, got 1"),
        ("Q?", [f"o{i}" for i in range(27)], "At most 26 options are allowed, got 27"),
        ("Q?", ["Yes", "yes"], "Options 'Yes' and 'yes' are the same"),
        ("Q?", ["Yes", "  "], "An option is empty or only whitespace"),
        ("   ", ["Yes", "No"], "The question is empty"),
    ],
)
def test_bad_questions_and_options(question, options, message):
    with pytest.raises(InputError, match=message):
        Question.checked(question, options)


def test_bad_input_saves_nothing(env):
    registry, store = env
    for kwargs, error in ((dict(panel="nope"), UnknownPanelError), (dict(question=""), InputError)):
        args = {"question": "Q?", **kwargs}
        with pytest.raises(error):
            api.start_run(args.pop("question"), ["Yes", "No"], registry=registry, store=store, backend=ScriptedBackend(), **args)
    store.blob(registry.model("beta").sha256).unlink()
    with pytest.raises(NotPulledError, match=r"run `localpanel pull beta`"):
        api.start_run("Q?", ["Yes", "No"], registry=registry, store=store, backend=ScriptedBackend())
    assert not store.runs_dir.exists()



def test_turns_are_grouped_by_model_and_alternate_between_rounds(env):
    registry, store = env
    seats, _ = api.seats_for(registry, store, None)
    from localpanel.panel.protocol import Debate

    debate = Debate(Question(text="Q?", options=["Yes", "No"]), seats, DebateSettings(rounds=3), ScriptedBackend())
    assert [s.name for s in debate.order(1)] == ["Ann", "Bob", "Cy", "Di"]
    assert [s.name for s in debate.order(2)] == ["Cy", "Di", "Ann", "Bob"]  # beta stays loaded into round 2


def test_a_run_dir_that_is_taken_is_refused(env, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="already exists and is not empty"):
        api.start_run("Q?", ["Yes", "No"], registry=env[0], store=env[1], backend=ScriptedBackend(), run_dir=taken)
    assert (taken / "notes.txt").read_text() == "mine" and len(list(taken.iterdir())) == 1


def test_html_card_draws_votes_persuasion_and_probabilities(env):
    backend = script(ScriptedBackend(), [
        {"Ann": ballot("Yes", confidence={"Yes": 0.7, "No": 0.3}), "Bob": ballot("No"), "Cy": ballot("No"), "Di": ballot("No")},
        {"Ann": ballot("Yes"), "Bob": ballot("Yes", who="Ann"), "Cy": ballot("No"), "Di": ballot("No")},
        {"Ann": ballot("Yes"), "Bob": ballot("Yes"), "Cy": ballot("Yes", who="Bob"), "Di": ballot("Yes", who="Ann")},
    ])
    t = run(env, backend, options=("Yes", "No", "Maybe"), rounds=3)
    assert [(p.round, p.attributed_to, p.participant) for p in t.turning_points] == [(2, "Ann", "Bob"), (3, "Bob", "Cy"), (3, "Ann", "Di")]
    page = render(t, "html")
    votes = page[page.index('<svg class="chart votes"'):]
    votes = votes[: votes.index("</svg>")]
    assert votes.count('class="series"') == 2  # Yes and No got votes; Maybe never did
    assert votes.count("<circle") == 6  # a point per round for each
    graph = page[page.index('<svg class="chart persuasion"'):]
    graph = graph[: graph.index("</svg>")]
    assert graph.count('class="node"') == 4 and graph.count('class="arrow"') == 3
    assert [label for label in ("R2", "R3")] and graph.count(">R2<") == 1 and graph.count(">R3<") == 2
    assert page.count('<svg class="pbar"') == 12  # one per ballot
    assert "prefers-color-scheme:dark" in page and "http" not in page and "<script" not in page
    poll = render(run(env, script(ScriptedBackend(), [{n: ballot("Yes") for n in NAMES}])), "html")
    assert 'class="chart' not in poll and poll.count('<svg class="pbar"') == 4


def test_a_panel_of_one_debates_with_itself(env):
    """The eval's reflect baseline: one seat over two rounds, nobody else to credit (attributed_to is null)."""
    from localpanel.engine.grammar import Choice, compile_schema
    from localpanel.panel.ballot import ballot_model

    plan = compile_schema(ballot_model(["Yes", "No"], [], "Yes").model_json_schema())
    assert [s.values for s in plan.segments if isinstance(s, Choice)][-1] == (None,)
    registry, store = env
    one = registry.models_panel(["alpha"])
    backend = script(ScriptedBackend(), [{"alpha": ballot("Yes")}, {"alpha": ballot("No", who=None)}])
    t = api.start_run("Is it?", ["Yes", "No"], registry=registry.with_panel(one), store=store, panel=one.name,
                      backend=backend, settings=DebateSettings(rounds=2, early_stop=False), with_moderator=False)
    assert [r.turns[0].vote for r in t.rounds] == ["Yes", "No"] and t.turning_points[0].attributed_to is None


def test_an_integer_question_tallies_the_answers_given_and_renders_even_when_all_fail(env):
    registry, store = env
    backend = script(ScriptedBackend(), [{"Ann": {"vote": 42, "rationale": "Six times seven is that."}, "Bob": {"vote": 41, "rationale": "I counted one short."},
                                          "Cy": {"vote": 42, "rationale": "It is six times seven."}, "Di": Failed("cut off")}])
    t = api.start_run("What is 6*7?", [], registry=registry, store=store, backend=backend, with_moderator=False, integer=True)
    assert t.options == ["42", "41"] and t.result.line == "Plurality — 42 (2/4 votes), 1 abstained"
    schema = backend.requests[0].schema_
    assert schema["properties"]["vote"]["type"] == "integer"
    failed = script(ScriptedBackend(), [{n: Failed("cut off") for n in NAMES}])
    t = api.start_run("What is 6*7?", [], registry=registry, store=store, backend=failed, with_moderator=False, integer=True)
    assert t.options == [] and "Result: No votes — all 4 ballots failed" in render(t, "text")
    for fmt in ("markdown", "html", "json"):
        assert "No votes" in render(t, fmt)


def test_the_shared_layout_opens_every_prompt_of_a_round_alike(env):
    """--layout shared: each round is one fresh prompt whose opening (the system prompt, the question, every ballot of
    the last round in one order) is the same for every seat, asking the backend to share it; the seat's own part
    (its name, persona, last vote, the framing and its rotation of the options) comes after."""
    backend = script(ScriptedBackend(), [
        {"Ann": ballot("Yes", "Ann's first reason."), "Bob": ballot("No", "Bob's first reason."),
         "Cy": Failed("cut off at 256 tokens"), "Di": ballot("No", "Di's first reason.")},
        {n: ballot("No") for n in NAMES},
    ])
    t = run(env, backend, rounds=2, layout="shared")
    assert t.settings.layout == "shared"
    for round_no in (1, 2):
        asked = [r for r in backend.requests if ("Round 2 of" in r.messages[-1].content) == (round_no == 2)]
        assert len(asked) == 4 and all(r.share_prefix for r in asked)
        assert all([m.role for m in r.messages] == ["system", "user"] for r in asked)  # no conversation carried
        texts = [r.messages[-1].content for r in asked]
        opening = [x[: x.index("You are ")] for x in texts]
        assert len(set(opening)) == 1 and opening[0].startswith("Question: Is it?")
        assert len({r.messages[0].content for r in asked}) == 1
        assert all("Persona of" not in r.messages[0].content for r in asked)
        for r, text in zip(asked, texts):
            own = text[len(opening[0]):]
            assert own.startswith(f"You are {r.key}. Persona of {r.key}.")
            turn = next(x for x in t.rounds[round_no - 1].turns if x.participant == r.key)
            assert own.endswith("Options (vote for exactly one):\n" + "\n".join(f"- {o}" for o in turn.option_order))
    two = [r for r in backend.requests if "Round 2 of" in r.messages[-1].content]
    shown = two[0].messages[-1].content
    for line in ("Ann voted Yes: Ann's first reason.", "Bob voted No: Bob's first reason.", "Cy abstained",
                 "Di voted No: Di's first reason."):
        assert line in shown  # every ballot, the seat's own among them
    ann = next(r for r in two if r.key == "Ann").messages[-1].content
    assert "Your vote in round 1 was Yes." in ann
    assert "Your vote in round 1" not in next(r for r in two if r.key == "Cy").messages[-1].content  # it failed
    assert sorted(t.rounds[1].turns[0].peer_order) == NAMES
    assert len({tuple(x.peer_order) for x in t.rounds[1].turns}) == 1
    # The copy guard's wording is the layout's own: the round's framing, never the question or a ballot.
    ann_guard = next(r for r in two if r.key == "Ann").avoid
    assert any(w.startswith("You are Ann. Persona of Ann.") for w in ann_guard)
    assert not any("Question:" in w or "voted" in w for w in ann_guard[-3:])
    # The conversation layout (the default) asks for no sharing.
    conversation = script(ScriptedBackend(), [{n: ballot("No") for n in NAMES}])
    run(env, conversation)
    assert not any(r.share_prefix for r in conversation.requests)
