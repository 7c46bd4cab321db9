"""The transcript stage: what a run leaves on disk, and the typed record of everything it measured.

A run directory holds::

    manifest.json    everything needed to run it again (question, options, panel with sha256, seeds, settings,
                     versions), written before the first turn
    turns.jsonl      a journal: each finished turn appended and fsynced before the next starts
    transcript.json  the complete result, written atomically at the end
"""

from __future__ import annotations

import re
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from localpanel.engine.runtime import RuntimeSettings
from localpanel.panel.copying import Copied
from localpanel.panel.counts import rankings
from localpanel.panel.measures import Measures, changes_of_mind, copy_measure, measure
from localpanel.panel.moderator import Argument, ModeratorReport
from localpanel.panel.council import Council, council
from localpanel.panel.proposals import MergeMap, merge
from localpanel.panel.protocol import DebateSettings, Question, StopReason, Turn
from localpanel.panel.tally import Tally, result_line, tally
from localpanel.weights.registry import ModelSpec, Panel

# 2: a vote is the seat's most probable option unless ``settings.vote_draw``; schema 1 drew every vote.
SCHEMA_VERSION = 2


def legacy_settings(data):
    """A record saved before votes were views (schema 1) drew its votes: read its settings that way; one saved before
    decoders had generations was decoded by decoder 2 (integer votes sampled, free text in any script). One saved
    before the copy guard existed ran without it (it is on by default now): read it as off; one saved while the
    guard counted tokens, as a guard of tokens."""
    if isinstance(data, dict) and isinstance(data.get("settings"), dict):
        settings = data["settings"]
        if data.get("schema_version", 1) < 2:
            settings = {"vote_draw": True, **settings}
        if "decoder" not in settings:  # made before decoding rules had generations: decoder 2's
            settings = {**settings, "decoder": 2}
        if "copy_guard" not in settings:
            settings = {**settings, "copy_guard": None}
        elif settings["copy_guard"] and "copy_guard_by" not in settings:
            settings = {**settings, "copy_guard_by": "tokens"}
        data = {**data, "settings": settings}
    return data


class ParticipantRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    model: str
    sha256: str
    persona: str | None = None
    seed: int
    temperature: float
    top_k: int
    top_p: float
    min_p: float
    repeat_penalty: float


class DocumentRecord(BaseModel):
    """A context file every seat read before the question: where it was, its sha256 and size, and how much of it
    the seats read (all of it unless it had to be cut to fit the smallest context)."""

    model_config = ConfigDict(extra="forbid")
    path: str
    name: str
    sha256: str
    size: int  # bytes
    chars: int  # characters of its text
    read: int  # characters the seats read


class Manifest(BaseModel):
    """What a rerun needs. Written before the first turn; resume and replay read it back."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = SCHEMA_VERSION
    kind: Literal["poll", "debate"]
    id: str
    created_at: str
    question: str
    # What the question asks for: one of ``options``, a whole number, or (open) an answer each seat proposes,
    # merged into the candidates voted on. A manifest saved before it was kept reads as options or integer.
    question_kind: Literal["options", "integer", "open"] = "options"
    options: list[str]
    documents: list[DocumentRecord] = Field(default_factory=list)
    panel: Panel
    participants: list[ParticipantRecord]
    models: dict[str, ModelSpec]
    sha256: dict[str, str]
    moderator: str | None
    settings: DebateSettings
    runtime: RuntimeSettings
    environment: dict

    _legacy = model_validator(mode="before")(legacy_settings)

    @model_validator(mode="before")
    @classmethod
    def _kind(cls, data):
        if isinstance(data, dict) and "question_kind" not in data:
            data = {**data, "question_kind": "options" if data.get("options") else "integer"}
        return data

    def asked(self, context: str = "") -> Question:
        """The question as it was asked (an open question's candidates come from its proposals; ``context``: its
        documents as the seats read them, read again by the caller)."""
        return Question(text=self.question, options=self.options, open=self.question_kind == "open", context=context)


class Round(BaseModel):
    number: int
    turns: list[Turn]
    tally: Tally


class Result(BaseModel):
    label: str
    winner: str | None
    counts: dict[str, int]
    line: str
    consensus: bool
    weighted: dict[str, float]
    abstentions: int


class Transcript(Measures):
    """A finished run: every ballot of every round, the result and its margin, turning points, who moved whom, the
    probability paths, rankings, copying (the panel's ``Measures``, kept as fields of their own), the moderator's
    summary, and the settings, runtime and machine it ran on."""

    schema_version: int = SCHEMA_VERSION
    kind: Literal["poll", "debate"]
    id: str
    created_at: str
    finished_at: str
    question: str
    options: list[str]
    panel: str
    participants: list[ParticipantRecord]
    rounds: list[Round]
    documents: list[DocumentRecord] = Field(default_factory=list)
    # An open question: each seat's proposal (round 0) and how they were merged into the candidates (``options``).
    proposals: list[Turn] = Field(default_factory=list)
    merge: MergeMap | None = None
    # ... and the council's answer in fixed fields, each citing the seats (from the ballots and the moderator).
    council: Council | None = None
    result: Result
    stopped_because: StopReason
    summary: str | None = None
    strongest_arguments: dict[str, Argument] = Field(default_factory=dict)
    moderator: ModeratorReport | None = None
    settings: DebateSettings
    runtime: RuntimeSettings
    environment: dict
    seconds: float

    _legacy = model_validator(mode="before")(legacy_settings)

    @model_validator(mode="after")
    def _changes_of_mind(self) -> "Transcript":
        """A transcript saved before votes were views counted every redraw as a change of mind: its turning points,
        persuasion graph and probability paths are read again from its ballots (nothing is written)."""
        if self.schema_version < 2:
            for name, value in changes_of_mind([p.name for p in self.participants], [r.turns for r in self.rounds]).items():
                setattr(self, name, value)
        if self.rankings is None and self.rounds and len(self.options) > 1:  # saved before rankings were kept
            self.rankings = rankings(self.options, self.rounds[-1].turns)
        if not self.copying and len(self.rounds) > 1:  # saved before copying was measured
            self.copying = copying_of(self)
        return self


def copying_of(t: "Transcript") -> list[Copied]:
    """The copying measure of a saved run, from its ballots (for a transcript saved before it was kept)."""
    s = t.settings
    integer = not any(len(r.turns[0].option_order) for r in t.rounds if r.turns)
    return copy_measure(t.question, [] if integer else t.options, [_seat_participant(p) for p in t.participants],
                        [r.turns for r in t.rounds], s)


def _seat_participant(p: ParticipantRecord):
    from localpanel.weights.registry import Participant

    return Participant(name=p.name, model=p.model, persona=p.persona, seed=p.seed, temperature=p.temperature,
                       top_k=p.top_k, top_p=p.top_p, min_p=p.min_p, repeat_penalty=p.repeat_penalty)


def headline(kind: str, rounds: list[Round], stopped_because: str) -> str:
    final = rounds[-1].tally if rounds else None
    line = result_line(final) if final else "No ballots"
    if kind == "poll":
        return line
    n = len(rounds)
    if final and final.label == "unanimous":
        return f"Consensus after {n} round{'s' if n != 1 else ''} · {line}"
    return f"No agreement after {n} round{'s' if n != 1 else ''} · {line}"


def build_transcript(
    manifest: Manifest, turns: list[Turn], stopped_because: StopReason, report: ModeratorReport | None, seconds: float
) -> Transcript:
    """Derive every figure from the ballots and assemble the transcript."""
    names = [p.name for p in manifest.participants]
    proposals = sorted((t for t in turns if t.round == 0), key=lambda t: names.index(t.participant))
    turns = [t for t in turns if t.round > 0]
    merged = merge(proposals, manifest.settings.merge) if manifest.question_kind == "open" else None
    # An open question's options are its candidates; an integer question's the answers given, in the order first given.
    options = merged.options if merged else manifest.options or list(dict.fromkeys(t.vote for t in turns if t.valid))
    asked = merged.options if merged else manifest.options
    by_round: dict[int, list[Turn]] = {}
    for t in turns:
        by_round.setdefault(t.round, []).append(t)
    rounds = []
    for number in sorted(by_round):
        ordered = sorted(by_round[number], key=lambda t: names.index(t.participant))
        rounds.append(Round(number=number, turns=ordered, tally=tally(options, ordered)))
    final = rounds[-1].tally if rounds else tally(options, [])
    measures = measure(manifest.question, asked, options, manifest.panel.participants,
                       [r.turns for r in rounds], manifest.settings, {p.name: p.model for p in manifest.participants})
    return Transcript(
        kind=manifest.kind,
        id=manifest.id,
        created_at=manifest.created_at,
        finished_at=now(),
        question=manifest.question,
        options=options,
        panel=manifest.panel.name,
        participants=manifest.participants,
        rounds=rounds,
        documents=manifest.documents,
        proposals=proposals,
        merge=merged,
        council=council(final, rounds[-1].turns, report) if merged and rounds else None,
        result=Result(
            label=final.label,
            winner=final.winner,
            counts=final.counts,
            line=headline(manifest.kind, rounds, stopped_because),
            consensus=final.label == "unanimous",
            weighted=final.weighted,
            abstentions=final.abstentions,
        ),
        stopped_because=stopped_because,
        **dict(measures),
        summary=report.summary if report else None,
        strongest_arguments=report.strongest if report else {},
        moderator=report,
        settings=manifest.settings,
        runtime=manifest.runtime,
        environment=manifest.environment,
        seconds=round(seconds, 3),
    )


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def run_id(question: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", question.lower()).strip("-")[:40].strip("-") or "run"
    return time.strftime("%Y%m%d-%H%M%S", time.localtime()) + "-" + slug
