"""The card model: a transcript as a list of typed sections, in the one order every writer follows.

``card_of(t)`` decides what a card says and in which order; the writers (``show/text.py``, ``show/markdown.py``,
``show/html.py``) only decide how a section looks. A new section is a dataclass here, a line in ``card_of``, and one
small function per writer. Sections hold the strings as given (questions, options, rationales); each writer escapes
them in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Callable

from pydantic import BaseModel

from localpanel.panel.copying import COPIED_WORDS, copy_line
from localpanel.panel.counts import rankings_lines, weighted_line
from localpanel.panel.moderator import Argument, facts
from localpanel.panel.tally import Influence, TurningPoint, margin_line, position_line, shift_line, shift_sentence
from localpanel.runs.transcript import Transcript


@dataclass(frozen=True)
class Header:
    title: str
    question: str


@dataclass(frozen=True)
class Result:
    line: str
    consensus: bool
    notes: tuple[str, ...] = ()  # the margin, the weighted count
    warning: str | None = None  # how a vote was made, when it is not the seat's most probable option


@dataclass(frozen=True)
class OptionRow:
    option: str
    votes: int
    share: float
    probability: float  # the mean of the seats' own probabilities


@dataclass(frozen=True)
class Options:
    rows: tuple[OptionRow, ...]
    abstentions: int


@dataclass(frozen=True)
class Document:
    name: str
    sha256: str
    size: int
    chars: int
    read: int


@dataclass(frozen=True)
class Documents:
    """The context files every seat read before the question, and how much of each."""

    items: tuple[Document, ...]

    @staticmethod
    def line(d: Document) -> str:
        read = "read whole" if d.read >= d.chars else f"cut to fit: read {d.read:,} of {d.chars:,} characters"
        return f"{d.name} ({d.size:,} bytes, sha256 {d.sha256[:12]}…): {read}"


@dataclass(frozen=True)
class Proposed:
    candidate: str
    by: tuple[tuple[str, str], ...]  # (seat, its proposal as written)


@dataclass(frozen=True)
class Proposals:
    """An open question's merge map: which proposal became which candidate, and the rule."""

    rows: tuple[Proposed, ...]
    rule: str
    failed: tuple[str, ...] = ()


@dataclass(frozen=True)
class Position:
    candidate: str
    text: str
    seats: tuple[str, ...]


@dataclass(frozen=True)
class CouncilAnswer:
    """An open question's answer in fixed fields, each citing the seats."""

    answer: str | None
    seats: tuple[str, ...]
    consensus: Position | None
    disagreements: tuple[Position, ...]
    single_points: tuple[Position, ...]

    def answer_line(self) -> str:
        return (f"{self.answer} (voted by {', '.join(self.seats)})" if self.answer else
                "none (the last round was tied or had no valid ballot)")

    def parts(self) -> list[tuple[str, Position]]:
        """(label, position) in the card's order: agreement, disagreements, points one seat alone made."""
        return ([("Where they agree", self.consensus)] if self.consensus else []) + \
            [("Where they disagree", p) for p in self.disagreements] + [("Said by one seat only", p) for p in self.single_points]


@dataclass(frozen=True)
class Notes:
    """A headed list of sentences (rankings, the position effect, copying)."""

    key: str
    heading: str
    lines: tuple[str, ...]
    short_heading: str | None = None  # what Markdown and HTML title it, when shorter than the terminal's


@dataclass(frozen=True)
class Summary:
    parts: tuple[tuple[str | None, str], ...]  # (heading, text)


@dataclass(frozen=True)
class Arguments:
    items: tuple[tuple[str, Argument], ...]  # (option, its strongest argument)


@dataclass(frozen=True)
class ModeratorFailure:
    reason: str


@dataclass(frozen=True)
class VoteMatrix:
    rounds: tuple[int, ...]
    rows: tuple[tuple[str, tuple[str | None, ...]], ...]


@dataclass(frozen=True)
class TurningPoints:
    points: tuple[TurningPoint, ...]


@dataclass(frozen=True)
class Persuasion:
    edges: tuple[Influence, ...]
    most_persuasive: str | None


@dataclass(frozen=True)
class PathRow:
    participant: str
    option: str
    probabilities: tuple[float | None, ...]


@dataclass(frozen=True)
class Paths:
    rounds: tuple[int, ...]
    rows: tuple[PathRow, ...]
    shifts: tuple[str, ...]


@dataclass(frozen=True)
class Ballot:
    participant: str
    model: str
    valid: bool
    vote: str = ""
    drawn: str = ""  # ' (drawn; most probable: X)' when a drawn vote is not the seat's view
    confidence: str = ""  # 'A 0.70 · B 0.30'
    attributed_to: str | None = None
    rationale: str = ""
    copied: str | None = None  # the copy line, for a rationale that copied
    failure: str = ""
    probabilities: dict[str, float] = field(default_factory=dict)  # raw: the HTML bar escapes its own labels


@dataclass(frozen=True)
class Ballots:
    number: int | None  # the round, in a debate
    final: bool  # the terminal card shows only the last round's ballots
    ballots: tuple[Ballot, ...]


@dataclass(frozen=True)
class Footer:
    text: str


Section = (Header | Documents | Result | CouncilAnswer | Options | Proposals | Notes | Summary | Arguments | ModeratorFailure | VoteMatrix | TurningPoints
           | Persuasion | Paths | Ballots | Footer)


@dataclass(frozen=True)
class Card:
    kind: str  # poll or debate
    options: tuple[str, ...]
    sections: tuple[Section, ...]
    transcript: Transcript  # for the HTML charts, which draw from the rounds


def escaped(section, escape: Callable[[str], str]):
    """The section with ``escape`` applied to every string it holds (``probabilities`` stays raw)."""

    def one(value):
        if isinstance(value, str):
            return escape(value)
        if isinstance(value, tuple):
            return tuple(one(v) for v in value)
        if is_dataclass(value):
            return escaped(value, escape)
        if isinstance(value, BaseModel):  # the panel's own records (turning points, arguments, influences)
            return value.model_copy(update={k: escape(v) for k, v in value if isinstance(v, str)})
        return value

    return replace(section, **{f.name: one(getattr(section, f.name)) for f in fields(section) if f.name != "probabilities"})


def title(t: Transcript) -> str:
    what = "Poll" if t.kind == "poll" else "Debate"
    return f"localpanel {what} · {len(t.participants)} participants · panel {t.panel} · seed {t.settings.seed}"


def how_voted(t: Transcript) -> str | None:
    """What a vote is, said on the card when it is not the seat's most probable option."""
    if not t.settings.vote_draw:
        return None
    return ("Votes were drawn from each seat's probabilities at its temperature (--vote-draw), so a vote may go "
            "against the seat's most probable option; turning points count only changes of that option.")


def copying_lines(t: Transcript) -> list[str]:
    """Per round after the first: how many rationales share COPIED_WORDS or more words in a row with earlier text."""
    lines = []
    if t.settings.copy_guard:
        unit = "tokens (the guard of an earlier localpanel)" if t.settings.copy_guard_by == "tokens" else "words"
        lines.append(f"Copy guard on: no rationale after round 1 could copy {t.settings.copy_guard} {unit} in a row from "
                     f"earlier rationales or its prompt's instructions (--copy-guard {t.settings.copy_guard}).")
    for r in sorted({c.round for c in t.copying}):
        rs = [c for c in t.copying if c.round == r]
        n = sum(c.copied for c in rs)
        lines.append(f"Round {r}: {n} of {len(rs)} rationales share {COPIED_WORDS} or more words in a row with text their "
                     f"seat had read (longest {max(c.words for c in rs)}; 12 or more: {sum(c.words >= 12 for c in rs)}).")
    return lines


def summary_parts(t: Transcript) -> list[tuple[str | None, str]]:
    """The summary as (heading, text): localpanel's facts first, then the case made for each option."""
    report = t.moderator
    if report is None or not report.facts:
        return [(None, t.summary)] if t.summary else []
    # The facts read again from the ballots, as the card's turning points are: a run saved before votes were views
    # kept facts that named other changes.
    names = [p.name for p in t.participants]
    parts: list[tuple[str | None, str]] = [(None, facts(t.options, names, [r.turns for r in t.rounds]))]
    for p in report.passages:
        if p.failure or not p.text:
            continue
        if p.by_model:
            parts.append((f"The case for {p.option} (the moderator, from {len(p.arguments)} rationales)", p.text))
        elif p.strongest is not None:
            parts.append((f"The case for {p.option}", f"argued by {p.strongest.participant} alone (quoted below)."))
    return parts


def summary_text(t: Transcript) -> str | None:
    """The summary as one paragraph, as the card gives it (what the page's snapshot and MCP show)."""
    parts = summary_parts(t)
    return " ".join(f"{h}: {text}" if h else text for h, text in parts) if parts else None


def footer(t: Transcript) -> str:
    per_round = " + ".join(f"{sum(x.seconds for x in r.turns):.1f}" for r in t.rounds)
    stop = {"consensus": "consensus", "stable": "no vote changed", "max_rounds": "last round"}[t.stopped_because]
    rounds = f"rounds {per_round} s · stopped: {stop} · " if t.kind == "debate" else ""
    return f"run {t.id} · {t.seconds:.1f} s · {rounds}again: localpanel show {t.id}"


def _ballots(t: Transcript) -> list[Ballots]:
    models = {p.name: p.model for p in t.participants}
    copies = {(c.participant, c.round): c for c in t.copying if c.copied}
    out = []
    for r in t.rounds:
        ballots = []
        for turn in r.turns:
            model = models[turn.participant]
            if not turn.valid:
                ballots.append(Ballot(turn.participant, model, False, failure=turn.failure or ""))
                continue
            view = turn.view
            conf = sorted(turn.confidence.items(), key=lambda kv: -kv[1])
            c = copies.get((turn.participant, turn.round))
            ballots.append(Ballot(
                turn.participant, model, True, vote=turn.vote,
                drawn=f" (drawn; most probable: {view})" if view is not None and view != turn.vote else "",
                confidence=" · ".join(f"{o} {p:.2f}" for o, p in conf),
                attributed_to=turn.attributed_to, rationale=turn.rationale or "",
                copied=copy_line(c) if c is not None else None, probabilities=dict(turn.confidence)))
        out.append(Ballots(r.number if t.kind == "debate" else None, r is t.rounds[-1], tuple(ballots)))
    return out


def card_of(t: Transcript) -> Card:
    """The card's sections, in order."""
    final = t.rounds[-1] if t.rounds else None
    s: list[Section] = [Header(title(t), t.question)]
    if t.documents:
        s.append(Documents(tuple(Document(d.name, d.sha256, d.size, d.chars, d.read) for d in t.documents)))
    notes = []
    if final:
        notes.append(margin_line(final.tally))
        if t.weighted_count:
            notes.append(weighted_line(t.weighted_count, final.tally))
    s.append(Result(t.result.line, t.result.consensus, tuple(n for n in notes if n), how_voted(t)))
    if (k := t.council) is not None:
        def pos(c):
            return Position(c.candidate, c.text, tuple(c.seats))
        s.append(CouncilAnswer(k.answer, tuple(k.answer_seats), pos(k.consensus) if k.consensus else None,
                               tuple(map(pos, k.disagreements)), tuple(map(pos, k.single_points))))
    if final:
        s.append(Options(tuple(OptionRow(o, final.tally.counts[o], final.tally.shares[o], final.tally.weighted[o])
                               for o in t.options), final.tally.abstentions))
    if t.merge is not None:
        s.append(Proposals(tuple(Proposed(c.text, tuple(zip(c.seats, c.proposals))) for c in t.merge.candidates),
                           t.merge.rule, tuple(t.merge.failed)))
    if final:
        # Borda and Condorcet from three options on (with two they repeat the count; the JSON has them).
        if t.rankings is not None and len(t.options) > 2:
            s.append(Notes("rankings", "Rankings from the probabilities (each ballot ranks every option by its own "
                           "probabilities)", tuple(rankings_lines(t.rankings, final.tally)),
                           "Rankings from the probabilities"))
    if t.positions:
        s.append(Notes("positions", "Position effect", (position_line(t.positions), shift_line(t.positions, t.options))))
    if parts := summary_parts(t):
        s.append(Summary(tuple(parts)))
    if t.strongest_arguments:
        s.append(Arguments(tuple(t.strongest_arguments.items())))
    elif t.moderator and t.moderator.failure:
        s.append(ModeratorFailure(t.moderator.failure))
    if t.kind == "debate" and t.rounds:
        numbers = tuple(r.number for r in t.rounds)
        s.append(VoteMatrix(numbers, tuple((n, tuple(v)) for n, v in t.vote_matrix.items())))
        s.append(TurningPoints(tuple(t.turning_points)))
        s.append(Persuasion(tuple(t.persuasion), t.most_persuasive))
        if t.probability_paths:
            s.append(Paths(numbers, tuple(PathRow(n, p.option, tuple(p.probabilities)) for n, p in t.probability_paths.items()),
                           tuple(shift_sentence(x) for x in t.shifts)))
        if t.copying:
            s.append(Notes("copying", "Copying (what a round adds: a rationale's longest run of words shared with text "
                           "its seat had read)", tuple(copying_lines(t)), "Copying"))
    s += _ballots(t)
    s.append(Footer(footer(t)))
    return Card(t.kind, tuple(t.options), tuple(s), t)
