"""The moderator: a summary that cannot misstate the result, and the strongest argument for each option.

What the summary says about the result and about who changed their mind is written by localpanel from the
ballots (``facts``), never by a model. The model writes one short passage per option, reading only the
rationales given for that option, and picks that option's strongest argument by number, so it can neither
invent an argument nor credit one side with the other side's case. It reads where the debate ended: the
latest rationale of each panelist whose final vote the option is. An option held by one panelist at the end,
or by none, needs no model: its latest rationale is quoted. The passages are independent requests, asked together, so a backend that
batches runs them side by side on the moderator's model.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from pydantic import BaseModel, ValidationError

from localpanel.engine.runtime import Backend, Generation, GenerationRequest, Message, Sampling
from localpanel.panel.ballot import case_model
from localpanel.panel.protocol import Question, Turn
from localpanel.panel.tally import tally, turning_points
from localpanel.weights.registry import ModelSpec

MODERATOR_KEY = "[moderator]"
MODERATOR_SAMPLING = Sampling(temperature=0.3, top_k=40, top_p=0.9, min_p=0.05, repeat_penalty=1.1)
# The most rationales read for one option: each panelist's latest for it, the latest panelists first.
MAX_ARGUMENTS_READ = 4


class Argument(BaseModel):
    number: int
    participant: str
    round: int
    vote: str
    text: str


class Passage(BaseModel):
    """The case made for one option: a model's passage from that option's rationales, or its only rationale."""

    option: str
    text: str | None = None
    strongest: Argument | None = None
    arguments: list[int] = []  # the numbers of the rationales it was written from
    by_model: bool = False
    failure: str | None = None
    seed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    raw: str = ""
    tokens: list[int] = []


class ModeratorReport(BaseModel):
    model: str
    facts: str = ""
    passages: list[Passage] = []
    strongest: dict[str, Argument] = {}
    summary: str | None = None
    failure: str | None = None
    seed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    text: str = ""  # every passage's raw output, in order: what replay compares


def numbered_arguments(rounds: list[list[Turn]]) -> list[Argument]:
    """Every distinct rationale given, numbered from 1 in the order it was given."""
    seen: set[str] = set()
    args: list[Argument] = []
    for turns in rounds:
        for t in turns:
            if t.valid and t.rationale and t.rationale.strip() not in seen:
                seen.add(t.rationale.strip())
                args.append(Argument(number=len(args) + 1, participant=t.participant, round=t.round, vote=t.vote, text=t.rationale.strip()))
    return args


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def facts(options: list[str], participants: list[str], rounds: list[list[Turn]]) -> str:
    """The result and every change of mind, in plain sentences, computed from the ballots alone. A change of mind
    is a change of the seat's most probable option (a turning point); with drawn votes, a vote that changed while
    the option stayed is said to be a redraw, so that the sentences match the card's turning points and its vote
    matrix alike. An integer question's options are the answers given, in the order first given."""
    options = options or list(dict.fromkeys(t.vote for turns in rounds for t in turns if t.valid))
    if not rounds:
        return "No ballots were cast."
    final = tally(options, rounds[-1])
    n = final.participants
    if final.label == "no votes":
        return f"None of the {n} panelists cast a valid ballot."
    lead = f"After {len(rounds)} rounds, " if len(rounds) > 1 else ""
    # Most votes first, ties by name: the same sentence whatever order the options were typed in.
    voted = sorted((o for o in options if final.counts[o]), key=lambda o: (-final.counts[o], o))
    if final.label == "unanimous":
        sentences = [f"{lead}all {n} panelists voted {final.winner}."]
    elif final.label == "tie":
        split = ", ".join(f"{final.counts[o]} voted {o}" for o in voted)
        sentences = [f"{lead}the panel was split: {split}."]
    else:
        rest = "".join(f"; {final.counts[o]} voted {o}" for o in voted[1:])
        sentences = [f"{lead}{final.counts[final.winner]} of {n} panelists voted {final.winner} ({final.label}){rest}."]
    if final.abstentions:
        sentences.append(f"{final.abstentions} ballot{'s' if final.abstentions > 1 else ''} failed and counted as abstentions.")
    if len(rounds) > 1:
        points = turning_points(participants, rounds)
        drawn = any(t.valid and t.vote != t.view for turns in rounds for t in turns)
        moved = "'s most probable option moved" if drawn else " moved"
        for p in points:
            credit = f", crediting {p.attributed_to}" if p.attributed_to else ", crediting no one"
            sentences.append(f"In round {p.round}, {p.participant}{moved} from {p.from_vote} to {p.to_vote}{credit}.")
        redrawn = redraws(participants, rounds)
        for r, who, before, after in redrawn:
            sentences.append(f"In round {r}, {who}'s drawn vote went from {before} to {after} while its most probable "
                             "option stayed (a redraw, not a change of mind).")
        if not points:
            sentences.append("Nobody changed their most probable option." if redrawn else "Nobody changed their vote.")
    return " ".join(s[0].upper() + s[1:] for s in sentences)


def redraws(participants: list[str], rounds: list[list[Turn]]) -> list[tuple[int, str, str, str]]:
    """(round, seat, vote before, vote after) for every drawn vote that changed while the seat's view did not."""
    out, last = [], {}
    for turns in rounds:
        for t in sorted((t for t in turns if t.valid), key=lambda t: participants.index(t.participant)):
            before = last.get(t.participant)
            if before is not None and before[0] != t.vote and before[1] == t.view:
                out.append((t.round, t.participant, before[0], t.vote))
            last[t.participant] = (t.vote, t.view)
    return out


def moderator_seed(run_seed: int, option: str = "") -> int:
    return int.from_bytes(hashlib.sha256(f"{run_seed}|moderator|{option}".encode()).digest()[:4], "little")


def case_messages(question: Question, option: str, args: list[Argument]) -> list[Message]:
    # Short on purpose: at real size every prompt token costs as much as 3 written ones (see issue 9).
    system = (
        "You are a neutral moderator. Report the panelists' arguments faithfully, adding nothing of your own. "
        'Reply with JSON: "strongest" is the number of the strongest argument; "case" combines their points '
        "in one sentence of your own words."
    )
    lines = [f"Question: {question.text}", f"Arguments for {option}:"]
    lines += [f"[{a.number}] {a.participant}: {a.text}" for a in args]
    return [Message(role="system", content=system), Message(role="user", content="\n".join(lines))]


def case_request(
    question: Question, option: str, args: list[Argument], model: ModelSpec, model_path: Path,
    backend: Backend, run_seed: int, max_tokens: int, share: bool = False,
) -> GenerationRequest:
    messages = case_messages(question, option, args)
    return GenerationRequest(
        key=f"{MODERATOR_KEY} {option}",
        model=model,
        model_path=model_path,
        messages=messages,
        context_base=messages,
        context_extra=max_tokens,
        schema=case_model([a.number for a in args]).model_json_schema(),
        sampling=MODERATOR_SAMPLING,
        seed=moderator_seed(run_seed, option),
        max_tokens=max_tokens,
        share_prefix=share,
    )


def read_case(passage: Passage, args: list[Argument], g: Generation) -> Passage:
    cls = case_model([a.number for a in args])
    passage.by_model = True
    passage.prompt_tokens, passage.completion_tokens = g.prompt_tokens, g.completion_tokens
    passage.seconds, passage.raw, passage.tokens = round(g.seconds, 4), g.text, g.tokens
    if g.failure:
        passage.failure = g.failure
        return passage
    try:
        data = cls.model_validate(json.loads(g.text))
    except (ValueError, ValidationError) as exc:
        passage.failure = f"the moderator's passage did not validate ({str(exc).splitlines()[0]})"
        return passage
    passage.text = data.case.strip()
    passage.strongest = next(a for a in args if a.number == data.strongest)
    return passage


def arguments_for(option: str, args: list[Argument], final: dict[str, str]) -> list[Argument]:
    """What the moderator reads for ``option``: the latest rationale of each panelist whose final vote it was
    (where the debate ended up), in the order given, at most MAX_ARGUMENTS_READ. An option nobody ended on is
    represented by the latest rationale given for it."""
    latest: dict[str, Argument] = {}
    for a in args:
        if a.vote == option:
            latest[a.participant] = a
    held = [a for name, a in latest.items() if final.get(name) == option]
    if not held:
        held = sorted(latest.values(), key=lambda a: a.number)[-1:]
    return sorted(held, key=lambda a: a.number)[-MAX_ARGUMENTS_READ:]


def moderate(
    question: Question,
    participants: list[str],
    rounds: list[list[Turn]],
    model: ModelSpec,
    model_path: Path,
    backend: Backend,
    run_seed: int,
    max_tokens: int = 384,
    share: bool = False,
) -> ModeratorReport:
    """The facts, and a passage per option held at the end (asked together; with ``share``, their common opening
    is evaluated once, as runs of decoder 4 on do)."""
    args = numbered_arguments(rounds)
    # An integer question has no options: the answers given are its options, in the order first given.
    options = question.options or list(dict.fromkeys(t.vote for turns in rounds for t in turns if t.valid))
    report = ModeratorReport(model=model.name, seed=moderator_seed(run_seed), facts=facts(options, participants, rounds))
    if not args:
        report.failure = "no valid ballots to moderate"
        report.summary = report.facts
        return report
    asked: list[tuple[Passage, list[Argument]]] = []
    final: dict[str, str] = {}
    for turns in rounds:
        for t in turns:
            if t.valid:
                final[t.participant] = t.vote
    held = Counter(final.values())
    for option in sorted(options, key=lambda o: (-held[o], o)):  # the case for the most held option first
        given = arguments_for(option, args, final)
        if not given:
            continue
        passage = Passage(option=option, arguments=[a.number for a in given])
        report.passages.append(passage)
        if len(given) == 1:
            passage.text, passage.strongest = given[0].text, given[0]
        else:
            passage.seed = moderator_seed(run_seed, option)
            asked.append((passage, given))
    asked.sort(key=lambda pair: pair[0].option)  # one batch order whatever order the options were typed in
    requests = [case_request(question, p.option, given, model, model_path, backend, run_seed, max_tokens, share)
                for p, given in asked]
    backend.generate_many(requests, on_done=lambda i, g: read_case(asked[i][0], asked[i][1], g))
    for p in report.passages:
        report.prompt_tokens += p.prompt_tokens
        report.completion_tokens += p.completion_tokens
        report.seconds += p.seconds
        if p.strongest is not None:
            report.strongest[p.option] = p.strongest
    report.seconds = round(report.seconds, 4)
    report.text = "\n".join(p.raw for p in report.passages)
    failed = [p for p in report.passages if p.failure]
    if failed:
        report.failure = f"no passage for {_names([p.option for p in failed])} ({failed[0].failure})"
    cases = [f"The case for {p.option}: {p.text}" for p in report.passages if p.text]
    report.summary = " ".join([report.facts, *cases])
    return report
