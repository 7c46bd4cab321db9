"""An open question's first step: each seat proposes a short answer, and equal or near-equal answers are merged
into the candidates the panel then votes among with the ballot it always uses.

A proposal is a turn of round 0 (seeded, journaled, resumed and replayed like a ballot); its ``vote`` is the answer.
No seat is told which candidate it proposed: round 1 starts a fresh conversation over the anonymous candidates.

The merge is deterministic and recorded: answers are normalized (case, accents, punctuation, articles, spaces,
number words) and equal ones merged; then an answer whose words all occur, in order, in another's is merged into
it ("Cervantes" into "Miguel de Cervantes"), unless it is a bare number (1605 is not 1605 BC). A candidate shows
the answer most of its seats gave, as the first of them wrote it (ties: the fuller answer).
"""

from __future__ import annotations

import re
import unicodedata

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from localpanel.engine.grammar import PHRASE, TEXT_PATTERN
from localpanel.engine.runtime import Generation, GenerationRequest, Message, Sampling
from localpanel.engine.scripts import scripts_of
from localpanel.panel.ballot import REASONING_MAX, RATIONALE_MIN
from localpanel.panel.prompts import turn_seed
from localpanel.panel.terms import MAX_OPTIONS, DebateSettings, Question, Seat, Turn

ANSWER_MAX = 80  # characters: a name, a date, a short phrase
RULE = ("normalize (case, accents, punctuation, articles a/an/the, spaces, number words zero to twenty); merge equal "
        "answers; then merge an answer whose words all occur in order in another's (not a bare number)")
NO_MERGE = "none (--no-merge): every proposal is its own candidate unless its text is the same"


def proposal_model(reason_first: bool) -> type[BaseModel]:
    """What a seat proposes: one short answer on one line (after its working, with ``reason_first``)."""
    answer = (str, Field(min_length=1, max_length=ANSWER_MAX, pattern=TEXT_PATTERN, json_schema_extra={PHRASE: True}))
    fields: dict = {"answer": answer}
    if reason_first:
        fields = {"rationale": (str, Field(min_length=RATIONALE_MIN, max_length=REASONING_MAX, pattern=TEXT_PATTERN)),
                  "answer": answer}
    return create_model("Proposal", __config__=ConfigDict(extra="forbid"), **fields)


def proposal_system_prompt(persona: str | None, label: str, n_seats: int, reason_first: bool) -> str:
    persona = (persona or "You are a thoughtful, independent panelist.").strip()
    fields = ('Reply with JSON. "rationale" works the question out in a few short plain sentences; then "answer" is '
              'your answer alone' if reason_first else 'Reply with JSON. "answer" is your answer alone')
    return (f"{persona}\nYou are {label}, one of {n_seats} panelists who each propose an answer to a question.\n"
            f"{fields}: a few words on one line (a name, a number, a short phrase), not a sentence.")


def proposal_prompt(question: Question) -> str:
    return f"{question.context}Question: {question.text}\nPropose your answer."


def proposal_request(question: Question, seat: Seat, n_seats: int, label: str, settings: DebateSettings,
                     replay: Turn | None = None) -> GenerationRequest:
    """A seat's proposal turn (round 0): its own short conversation, seeded like a ballot."""
    messages = [Message(role="system", content=proposal_system_prompt(seat.participant.persona, label, n_seats,
                                                                      settings.reason_first)),
                Message(role="user", content=proposal_prompt(question))]
    return GenerationRequest(
        key=seat.name, model=seat.model, model_path=seat.model_path, messages=messages,
        schema=proposal_model(settings.reason_first).model_json_schema(),
        sampling=Sampling.of(seat.participant, settings.temperature, draw_choices=True, greedy_integers=True),
        scripts=scripts_of([question.text, question.context]), seed=turn_seed(settings.seed, seat.participant, 0),
        max_tokens=settings.max_tokens, context_base=messages, context_extra=settings.max_tokens,
        replay=list(replay.tokens) if replay is not None else None)


def read_proposal(request: GenerationRequest, g: Generation, reason_first: bool) -> Turn:
    turn = Turn(participant=request.key, round=0, option_order=[], seed=request.seed, prompt_tokens=g.prompt_tokens,
                cached_tokens=g.cached_tokens, completion_tokens=g.completion_tokens, seconds=round(g.seconds, 4),
                prompt_seconds=round(g.prompt_seconds, 4), rebuild_seconds=round(g.rebuild_seconds, 4),
                text=g.text, tokens=g.tokens, failure=g.failure)
    if g.failure:
        return turn
    try:
        proposal = proposal_model(reason_first).model_validate_json(g.text)
    except ValidationError as exc:  # the grammar makes this unreachable; recorded, not dropped, if it happens
        turn.failure = f"the proposal did not validate: {exc.errors()[0]['msg']}"
        return turn
    turn.vote, turn.rationale = proposal.answer, getattr(proposal, "rationale", None)
    return turn


# -- merging ---------------------------------------------------------------------------------------------------------

_NUMBERS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_ARTICLES = {"a", "an", "the"}


def normalized(text: str) -> str:
    """An answer as it is compared: lower case, no accents, punctuation as spaces, no articles, number words as
    digits, single spaces."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(c for c in text if not unicodedata.combining(c))
    words = re.sub(r"[^\w\s]", " ", text).split()
    return " ".join(_NUMBERS.get(w, w) for w in words if w not in _ARTICLES)


def _within(short: list[str], long: list[str]) -> bool:
    """Whether the words of ``short`` all occur in ``long`` in the same order."""
    it = iter(long)
    return all(w in it for w in short)


class Candidate(BaseModel):
    """One answer the panel votes on: the text it shows and the proposals merged into it."""

    text: str
    seats: list[str]  # who proposed it (never shown to a seat)
    proposals: list[str]  # the texts as proposed, in seat order


class MergeMap(BaseModel):
    """Which proposal became which candidate, and by what rule."""

    rule: str
    candidates: list[Candidate]
    failed: list[str] = Field(default_factory=list)  # seats whose proposal failed

    @property
    def options(self) -> list[str]:
        return [c.text for c in self.candidates]

    def candidate_of(self, seat: str) -> str | None:
        return next((c.text for c in self.candidates if seat in c.seats), None)


def merge(proposals: list[Turn], merge_near: bool = True) -> MergeMap:
    """The candidates of an open question from its proposals (in seat order)."""
    given = [(t.participant, (t.vote or "").strip()) for t in proposals if t.valid and (t.vote or "").strip()]
    failed = [t.participant for t in proposals if not (t.valid and (t.vote or "").strip())]
    key = normalized if merge_near else (lambda s: s)
    groups: dict[str, list[tuple[str, str]]] = {}
    for seat, text in given:
        groups.setdefault(key(text) or text.casefold(), []).append((seat, text))
    if merge_near:
        # A group whose words all occur in order in a longer group's joins it (the longest first, so that a chain
        # ends in the fullest answer); a bare number never joins, and is never joined into.
        keys = sorted(groups, key=lambda k: (-len(k.split()), k))
        for k in sorted(groups, key=lambda k: (len(k.split()), k)):
            if k not in groups or k.isdigit():
                continue
            host = next((h for h in keys if h != k and h in groups and not h.isdigit()
                         and len(h.split()) > len(k.split()) and _within(k.split(), h.split())), None)
            if host is not None:
                groups[host] += groups.pop(k)
    order = [s for s, _ in given]
    candidates = []
    for members in groups.values():
        members.sort(key=lambda m: order.index(m[0]))
        texts = [text for _, text in members]
        forms = [key(x) or x.casefold() for x in texts]
        form = min(dict.fromkeys(forms), key=lambda f: (-forms.count(f), -len(f), forms.index(f)))
        shown = texts[forms.index(form)]
        candidates.append(Candidate(text=shown, seats=[s for s, _ in members], proposals=texts))
    candidates.sort(key=lambda c: order.index(c.seats[0]))
    _distinct(candidates)
    return MergeMap(rule=RULE if merge_near else NO_MERGE, candidates=candidates[:MAX_OPTIONS], failed=failed)


def _distinct(candidates: list[Candidate]) -> None:
    """Candidates the options' rule would call the same (equal but for case) get the seat's number appended."""
    seen: set[str] = set()
    for c in candidates:
        text = c.text
        n = 2
        while text.casefold() in seen:
            text, n = f"{c.text} ({n})", n + 1
        seen.add(text.casefold())
        c.text = text
