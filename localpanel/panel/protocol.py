"""The protocol stage: who sees what, in which order, with which seed, round after round.

A poll is one round of independent ballots. A debate adds rounds in which each participant sees every
other participant's last vote and rationale and may change its vote, crediting whoever persuaded it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from localpanel.engine.draw import pick, rotate, shifts
from localpanel.engine.runtime import Backend, Generation, GenerationRequest, Message, Sampling
from localpanel.engine.scripts import scripts_of
from localpanel.errors import ContextOverflowError, InputError, QuestionError
from localpanel.panel.ballot import RATIONALE_MAX, REASONING_MAX, ballot_model
from localpanel.weights.registry import ModelSpec, Participant

# The limits of what a run may be asked, in one home: the CLI, the web page, MCP and the eval all check these.
MAX_OPTIONS = 26
MAX_ROUNDS = 20
# The copy guard's default run length, in words (as the copy measure counts them): chosen by scripts/copying_study,
# see README.
COPY_GUARD = 8
# Context sizing: what one other participant's ballot and one round's framing take in a prompt, at most.
PEER_BALLOT_TOKENS = 160
ROUND_FRAMING_TOKENS = 96
MAX_QUESTION_CHARS = 4000
StopReason = Literal["consensus", "stable", "max_rounds"]


class Turn(BaseModel):
    """One participant's ballot in one round, with what it took to produce it."""

    model_config = ConfigDict(extra="forbid")
    participant: str
    round: int
    vote: str | None = None
    rationale: str | None = None
    attributed_to: str | None = None
    confidence: dict[str, float] = Field(default_factory=dict, description="the model's probability of each option")
    # The probabilities in the order shown alone, when the vote was scored under several rotations.
    raw_confidence: dict[str, float] | None = None
    attribution_confidence: dict[str, float] | None = None
    option_order: list[str]
    peer_order: list[str] | None = None
    seed: int
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    prompt_seconds: float = 0.0
    rebuild_seconds: float = 0.0
    text: str = ""
    tokens: list[int] = Field(default_factory=list)
    failure: str | None = None

    @property
    def valid(self) -> bool:
        return self.failure is None and self.vote is not None

    @property
    def view(self) -> str | None:
        """The seat's own view: the option it gave the highest probability (ties to the smallest text, as the
        vote is chosen), whatever its vote was drawn as; its vote where there are no probabilities (an integer
        answer). None for a failed ballot."""
        if not self.valid:
            return None
        if not self.confidence:
            return self.vote
        values = list(self.confidence)
        return values[pick(values, [self.confidence[v] for v in values], 0.0, self.seed, "vote")]


class Question(BaseModel):
    """A question and its options, checked: this is where bad input is turned away."""

    model_config = ConfigDict(extra="forbid")
    text: str
    options: list[str]

    @property
    def integer(self) -> bool:
        """A question without options is answered with an integer (the grammar forces one)."""
        return not self.options

    @classmethod
    def checked(cls, text: str, options: list[str] | tuple[str, ...], integer: bool = False) -> "Question":
        text = (text or "").strip()
        if not text:
            raise QuestionError("The question is empty; pass the question as the first argument.")
        if len(text) > MAX_QUESTION_CHARS:
            raise QuestionError(f"The question is {len(text)} characters long; keep it under {MAX_QUESTION_CHARS}.")
        if integer:
            if options:
                raise QuestionError("A question answered with an integer has no options.")
            return cls(text=text, options=[])
        opts = [o.strip() for o in options]
        if any(not o for o in opts):
            raise QuestionError("An option is empty or only whitespace; give every -o/--option some text.")
        if len(opts) < 2:
            raise QuestionError(f"A vote needs at least 2 options, got {len(opts)}; add more with -o/--option.")
        if len(opts) > MAX_OPTIONS:
            raise QuestionError(f"At most {MAX_OPTIONS} options are allowed, got {len(opts)}.")
        seen: dict[str, str] = {}
        for o in opts:
            if o.casefold() in seen:
                raise QuestionError(f"Options {seen[o.casefold()]!r} and {o!r} are the same; each option must differ.")
            seen[o.casefold()] = o
            if len(o) > 200:
                raise QuestionError(f"Option {o[:40]!r}… is {len(o)} characters long; keep options under 200.")
        return cls(text=text, options=opts)


@dataclass
class Seat:
    """A participant with the model it runs on, ready to be asked."""

    participant: Participant
    model: ModelSpec
    model_path: Path

    @property
    def name(self) -> str:
        return self.participant.name


# The generation of the decoding rules a run is made under, kept in its settings so that a run resumes and replays
# with the rules it was made with. 3: integer votes greedy unless drawn, free text kept to the question's scripts.
# Runs saved before the field existed read as 2.
DECODER = 3


class DebateSettings(BaseModel):
    """How a poll or debate is run: rounds, seed, sampling, the ballot's order, debiasing, views or draws, the copy
    guard and calibrated seat weights. Every field is kept in the run's manifest, so resume and replay run as it did."""

    model_config = ConfigDict(extra="forbid")
    rounds: int = Field(default=1, ge=1, le=MAX_ROUNDS)
    seed: int = Field(default=7, ge=0)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    # A rationale of 400 one-character tokens plus its JSON fits: the character limit binds before this does.
    max_tokens: int = Field(default=512, ge=32, le=4096)
    anonymous: bool = False
    early_stop: bool = True
    # The rationale comes before the vote, so that the model works the question out before it answers.
    reason_first: bool = False
    # Score the vote under rotations of the options shown and average (cancels a preference for a position).
    debias: bool = True
    # Draw each vote from the seat's probabilities at its temperature instead of taking its most probable
    # option. Runs saved before votes were views (manifest schema 1) drew, and are read with this on.
    vote_draw: bool = False
    # The copy guard: from round 2 on, a rationale may not copy a run of this many words from the peers' or its
    # own earlier rationales or from its prompt's instructions (runs the question or options hold excepted),
    # and the prompt asks for the seat's own words (None: off). Kept in the manifest for resume; runs saved
    # before it was on by default are read as off, and those saved while it counted tokens as "tokens".
    copy_guard: int | None = Field(default=COPY_GUARD, ge=2, le=64)
    copy_guard_by: Literal["words", "tokens"] = "words"
    # Calibrated weight of each model (`localpanel calibrate`), and what they were calibrated on: the card adds a
    # weighted count to the plain one. Decoding does not read them.
    seat_weights: dict[str, float] | None = None
    weights_from: str | None = None
    decoder: int = Field(default=DECODER, ge=2, le=DECODER)

    @classmethod
    def checked(cls, **fields) -> "DebateSettings":
        """Settings from outside (the page, MCP): a bad value is one sentence naming the setting and its range."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            error = exc.errors()[0]
            name = ".".join(str(x) for x in error["loc"]) or "a setting"
            ranges = {"rounds": f"a whole number from 1 to {MAX_ROUNDS}", "seed": "a whole number of 0 or more",
                      "temperature": "a number from 0 to 2"}
            want = ranges.get(name, error["msg"].lower())
            raise InputError(f"{name} must be {want}; got {error.get('input')!r}.") from None

    def vote_temperature(self, temperature: float) -> float:
        """The temperature a vote is chosen at, for a seat of ``temperature``: 0 (its most probable option)
        unless votes are drawn."""
        if not self.vote_draw:
            return 0.0
        return temperature if self.temperature is None else self.temperature


def turn_seed(run_seed: int, participant: Participant, round_no: int, salt: str = "ballot") -> int:
    """A seed for one turn, derived from the run seed, the participant (name and seed) and the round."""
    key = f"{run_seed}|{participant.seed}|{participant.name}|{round_no}|{salt}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")


def shuffled(items: list[str], seed: int) -> list[str]:
    order = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in order]


def canonical_order(options: list[str], run_seed: int) -> list[str]:
    """One order of the options per run, from the option set and the seed alone (never the typed order):
    every seat is shown a rotation of it."""
    key = int.from_bytes(hashlib.sha256(f"{run_seed}|options".encode()).digest()[:4], "little")
    return shuffled(sorted(options), key)


def display_order(canonical: list[str], seat_index: int, round_no: int) -> list[str]:
    """A Latin square: within a round, seat i sees the canonical order rotated by i (and each round shifts it
    on by one), so that each option stands in each position as evenly as the number of seats allows."""
    return rotate(canonical, seat_index + round_no - 1)


def labels_for(seats: list[Seat], anonymous: bool) -> dict[str, str]:
    """How participants are named to each other: their names, or Panelist A, B, ... with --anonymous."""
    if not anonymous:
        return {s.name: s.name for s in seats}
    return {s.name: f"Panelist {chr(ord('A') + i)}" for i, s in enumerate(seats)}


def system_prompt(seat: Seat, n_seats: int, rounds: int, label: str, integer: bool = False, reason_first: bool = False) -> str:
    persona = (seat.participant.persona or "You are a thoughtful, independent panelist.").strip()
    if rounds == 1:
        setting = f"You are {label}, one of {n_seats} panelists who each answer a question on their own."
    else:
        setting = (
            f"You are {label}, one of {n_seats} panelists debating a question over up to {rounds} rounds. "
            "After each round you read the other panelists' ballots and may keep or change your vote."
        )
    vote = '"vote" is your answer, a whole number.' if integer else '"vote" is exactly one of the options.'
    if reason_first:
        fields = f'Reply with a JSON ballot. "rationale" works the question out in a few short plain sentences; then {vote}'
    else:
        fields = f'Reply with a JSON ballot. {vote} "rationale" states your main reason in one to three sentences of plain prose.'

    if rounds > 1:
        fields += ' From round 2 on, "attributed_to" names the panelist whose argument changed your vote, or null.'
    return f"{persona}\n{setting}\n{fields}"


def _options_block(options: list[str]) -> str:
    if not options:
        return "Answer with a whole number."
    return "Options (vote for exactly one):\n" + "\n".join(f"- {o}" for o in options)


# The options come last in every prompt: a vote scored under another rotation of them re-reads only the options
# (and the chat template's few tokens after them), never an instruction that could as well come before.
def first_round_prompt(question: Question, option_order: list[str]) -> str:
    return f"Question: {question.text}\nCast your ballot.\n{_options_block(option_order)}"


# With the copy guard on, the prompt also asks for what the guard enforces (without it, prompts are as they were, so
# that runs saved before replay identically).
# Measured on ARC (README): asking a seat to "answer the strongest argument against your vote" moved 16 of 44
# round-2 votes (7 right to wrong, none wrong to right); this asks for the words alone.
OWN_WORDS = "Write your rationale in your own words; do not repeat an earlier rationale."


def later_round_prompt(
    question: Question, option_order: list[str], round_no: int, rounds: int, peers: list[tuple[str, Turn]],
    own_words: bool = False,
) -> str:
    lines = [f"Round {round_no} of {rounds}. The other panelists' ballots from round {round_no - 1}:"]
    for label, turn in peers:
        if turn.valid:
            lines.append(f"- {label} voted {turn.vote}: {turn.rationale}")
        else:
            lines.append(f"- {label} abstained (no valid ballot).")
    lines += [
        f"Question: {question.text}",
        "Weigh these arguments, then cast your ballot for this round: keep your vote or change it."
        + (f" {OWN_WORDS}" if own_words else ""),
        _options_block(option_order),
    ]
    return "\n".join(lines)


@dataclass
class TurnPlan:
    """Everything a turn is decided by; rebuilt identically on resume and replay."""

    seat: Seat
    round: int
    seed: int
    option_order: list[str]
    peer_order: list[str] | None
    ballot: type[BaseModel]
    messages: list[Message]

    @property
    def schema(self) -> dict:
        return self.ballot.model_json_schema()


class Debate:
    """Runs the rounds. Finished turns come in through ``done`` (from a journal) and are never redone."""

    def __init__(
        self,
        question: Question,
        seats: list[Seat],
        settings: DebateSettings,
        backend: Backend,
        done: list[Turn] | None = None,
        on_turn: Callable[[Turn], None] | None = None,
        on_progress: Callable[[str, Seat, int, int], None] | None = None,
    ):
        self.question, self.seats, self.settings, self.backend = question, seats, settings, backend
        self.labels = labels_for(seats, settings.anonymous)
        self.by_label = {label: name for name, label in self.labels.items()}
        self.index = {s.name: i for i, s in enumerate(seats)}
        self.canonical = canonical_order(question.options, settings.seed)
        # The rotations each vote is scored under (0: the order shown); one when not debiasing.
        self.rotations = shifts(len(question.options)) if settings.debias and len(question.options) > 1 else [0]
        self.rounds: list[dict[str, Turn]] = []
        for turn in done or []:
            self._record(turn)
        self.on_turn = on_turn or (lambda turn: None)
        self.on_progress = on_progress or (lambda event, seat, round_no, tokens: None)

    def _record(self, turn: Turn) -> None:
        while len(self.rounds) < turn.round:
            self.rounds.append({})
        self.rounds[turn.round - 1][turn.participant] = turn

    def turn(self, name: str, round_no: int) -> Turn | None:
        return self.rounds[round_no - 1].get(name) if round_no <= len(self.rounds) else None

    # -- what each participant sees ------------------------------------------------------------------

    def plan(self, seat: Seat, round_no: int) -> TurnPlan:
        """The ballot type and the whole conversation (earlier rounds included) for one turn."""
        n, rounds = len(self.seats), self.settings.rounds
        prompt = system_prompt(seat, n, rounds, self.labels[seat.name], self.question.integer, self.settings.reason_first)
        messages = [Message(role="system", content=prompt)]
        for r in range(1, round_no + 1):
            seed = turn_seed(self.settings.seed, seat.participant, r)
            option_order = display_order(self.canonical, self.index[seat.name], r)
            peer_order = None
            if r == 1:
                def content(order: list[str]) -> str:
                    return first_round_prompt(self.question, order)
            else:
                peer_order = shuffled([s.name for s in self.seats if s.name != seat.name], seed ^ 0x5A5A)
                peers = [(self.labels[p], t) for p in peer_order if (t := self.turn(p, r - 1)) is not None]

                def content(order: list[str], peers=peers, r=r) -> str:
                    return later_round_prompt(self.question, order, r, rounds, peers, bool(self.settings.copy_guard))
            variants = [content(rotate(option_order, k)) for k in self.rotations[1:]] or None
            messages.append(Message(role="user", content=content(option_order), variants=variants))
            ballot = self.ballot(seat, r)
            if r == round_no:
                return TurnPlan(seat, r, seed, option_order, peer_order, ballot, messages)
            past = self.turn(seat.name, r)
            if past is not None and past.tokens:
                messages.append(
                    Message(role="assistant", content=past.text, tokens=past.tokens, schema=ballot.model_json_schema())
                )
            else:  # a turn that failed before writing anything: drop its question, so that roles keep alternating
                messages.pop()
        raise AssertionError("unreachable")

    def previous_vote(self, name: str, round_no: int) -> str | None:
        """The participant's last valid vote before ``round_no``."""
        for r in range(round_no - 1, 0, -1):
            t = self.turn(name, r)
            if t is not None and t.valid:
                return t.vote
        return None

    def ballot(self, seat: Seat, round_no: int) -> type[BaseModel]:
        first = self.settings.reason_first
        options = sorted(self.question.options)  # the schema lists them in one order, whatever order they came in
        if round_no == 1:
            return ballot_model(options, reason_first=first)
        others = [self.labels[s.name] for s in self.seats if s.name != seat.name]
        previous = self.previous_vote(seat.name, round_no)
        if previous is not None and self.question.integer:
            previous = int(previous)
        return ballot_model(options, others, previous, reason_first=first)

    # -- running ---------------------------------------------------------------------------------------

    def context_growth(self) -> int:
        """Tokens a participant's conversation can reach beyond its first prompt: a ballot, then per round a
        ballot and the others' ballots (a rationale is at most 400 characters) with the round's framing."""
        peer = PEER_BALLOT_TOKENS if not self.settings.reason_first else PEER_BALLOT_TOKENS * REASONING_MAX // RATIONALE_MAX
        per_round = self.settings.max_tokens + (len(self.seats) - 1) * peer + ROUND_FRAMING_TOKENS
        return self.settings.max_tokens + (self.settings.rounds - 1) * per_round

    def check_fits(self) -> None:
        """Before any weights load: the first prompt plus a ballot must fit every participant's context. A cheap
        upper bound settles it for ordinary questions; the exact count is taken only when the bound is too big."""
        for seat in self.seats:
            plan = self.plan(seat, 1)
            window = self.backend.context_length(seat.model, seat.model_path)
            if self.backend.token_bound(seat.model, seat.model_path, plan.messages) + self.settings.max_tokens <= window:
                continue
            need = self.backend.count_tokens(seat.model, seat.model_path, plan.messages) + self.settings.max_tokens
            if need > window:
                raise ContextOverflowError(
                    f"The question does not fit {seat.name}'s context: its prompt and a ballot of up to "
                    f"{self.settings.max_tokens} tokens need {need} tokens, {seat.model.name} has {window}; "
                    "shorten the question or lower --max-tokens."
                )

    def order(self, round_no: int) -> list[Seat]:
        """Seats grouped by model, so that each model is loaded at most once per round; the model order
        alternates between rounds so the last one used stays loaded into the next round."""
        models = list(dict.fromkeys(s.model.name for s in self.seats))
        if round_no % 2 == 0:
            models.reverse()
        return [s for m in models for s in self.seats if s.model.name == m]

    def run(self) -> StopReason:
        for round_no in range(1, self.settings.rounds + 1):
            if round_no > 1 and (reason := self.stop_after(round_no - 1)):
                return reason
            self.cast_round(round_no)
        return "max_rounds"

    def stop_after(self, round_no: int) -> StopReason | None:
        """consensus: everyone cast the same vote; stable: nobody changed their vote."""
        if not self.settings.early_stop:
            return None
        turns = [self.turn(s.name, round_no) for s in self.seats]
        if all(t is not None and t.valid for t in turns) and len({t.vote for t in turns}) == 1:
            return "consensus"
        if round_no > 1:
            before = [self.turn(s.name, round_no - 1) for s in self.seats]
            if all(t and b and t.valid and b.valid and t.vote == b.vote for t, b in zip(turns, before)):
                return "stable"
        return None

    def request(self, plan: TurnPlan, replay: Turn | None = None) -> GenerationRequest:
        seat = plan.seat
        return GenerationRequest(
            key=seat.name,
            model=seat.model,
            model_path=seat.model_path,
            messages=plan.messages,
            schema=plan.schema,
            sampling=Sampling.of(seat.participant, self.settings.temperature, draw_choices=self.settings.vote_draw,
                                 greedy_integers=self.settings.decoder >= 3 and not self.settings.vote_draw),
            scripts=scripts_of([self.question.text, *self.question.options]) if self.settings.decoder >= 3 else None,
            seed=plan.seed,
            max_tokens=self.settings.max_tokens,
            context_base=self.plan(seat, 1).messages,
            context_extra=self.context_growth(),
            replay=list(replay.tokens) if replay is not None else None,
            avoid=self.avoid(plan) if self.settings.copy_guard and plan.round > 1 else None,
            quotable=[self.question.text, *self.question.options] if self.settings.copy_guard and plan.round > 1 else None,
            copy_guard=self.settings.copy_guard if plan.round > 1 else None,
            copy_guard_by=self.settings.copy_guard_by,
        )

    def avoid(self, plan: TurnPlan) -> list[str]:
        """What a later-round rationale may not copy a long run from: every earlier rationale (the peers' and its
        own) and the instructions of its prompts. Not the question or the options, which it may quote."""
        texts = [t.rationale for r in range(1, plan.round) for t in self.rounds[r - 1].values() if t.valid and t.rationale]
        n, rounds = len(self.seats), self.settings.rounds
        texts.append(system_prompt(plan.seat, n, rounds, self.labels[plan.seat.name], self.question.integer,
                                   self.settings.reason_first))
        framing = later_round_prompt(self.question, [], plan.round, rounds, [], True)
        texts += [line for line in framing.splitlines() if not line.startswith(("Question:", "Options", "- "))]
        return texts

    def cast_round(self, round_no: int) -> None:
        """Ask every seat that has no ballot for this round yet, all at once: the backend may run seats that
        share a model together. Seats whose ballot the journal holds go along as recorded (``replay``), so
        that the backend can compose its batches as they were; each new ballot is recorded as it comes."""
        seats = self.order(round_no)
        if all(self.turn(s.name, round_no) is not None for s in seats):
            return
        plans = [self.plan(seat, round_no) for seat in seats]
        requests = [self.request(p, self.turn(p.seat.name, round_no)) for p in plans]
        for p, r in zip(plans, requests):
            if r.replay is None:
                self.on_progress("start", p.seat, round_no, 0)

        def done(i: int, g: Generation) -> None:
            turn = self.read_ballot(plans[i], g)
            self._record(turn)
            self.on_turn(turn)
            self.on_progress("done", plans[i].seat, round_no, turn.completion_tokens)

        self.backend.generate_many(
            requests, lambda i, n: self.on_progress("token", plans[i].seat, round_no, n), done
        )

    def read_ballot(self, plan: TurnPlan, g: Generation) -> Turn:
        turn = Turn(
            participant=plan.seat.name,
            round=plan.round,
            option_order=plan.option_order,
            peer_order=plan.peer_order,
            seed=plan.seed,
            prompt_tokens=g.prompt_tokens,
            cached_tokens=g.cached_tokens,
            completion_tokens=g.completion_tokens,
            seconds=round(g.seconds, 4),
            prompt_seconds=round(g.prompt_seconds, 4),
            rebuild_seconds=round(g.rebuild_seconds, 4),
            text=g.text,
            tokens=g.tokens,
            failure=g.failure,
        )
        if g.failure:
            return turn
        try:
            ballot = plan.ballot.model_validate_json(g.text)
        except ValidationError as exc:
            # The grammar makes this unreachable; if it happens anyway the turn is recorded, not dropped.
            turn.failure = f"the ballot did not validate: {exc.errors()[0]['msg']}"
            return turn
        turn.vote, turn.rationale = str(ballot.vote), ballot.rationale
        label = getattr(ballot, "attributed_to", None)
        turn.attributed_to = self.by_label.get(label, label) if label is not None else None
        if (vote := g.choices.get("vote")) is not None:
            turn.confidence = {v: round(p, 6) for v, p in zip(vote.values, vote.probabilities)}
            if vote.raw is not None:
                turn.raw_confidence = {v: round(p, 6) for v, p in zip(vote.values, vote.raw)}
        if (who := g.choices.get("attributed_to")) is not None:
            turn.attribution_confidence = {
                (self.by_label.get(v, v) if v is not None else "null"): round(p, 6)
                for v, p in zip(who.values, who.probabilities)
            }
        return turn
