"""The protocol's terms: the limits of what a run may be asked, the question, a seat, a turn (one ballot as
recorded) and the settings a poll or debate runs under. The protocol (protocol.py) and what a seat is shown
(prompts.py) are written in them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from localpanel.engine.draw import pick
from localpanel.errors import InputError, QuestionError
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
    # An open question: each seat proposes a short answer first; its options are the merged proposals.
    open: bool = False
    # Documents every seat reads before the question (--context), as one block, cut to fit when it must be.
    context: str = ""

    @property
    def integer(self) -> bool:
        """A question without options is answered with an integer (the grammar forces one), unless it is open."""
        return not self.options and not self.open

    @property
    def kind(self) -> str:
        return "open" if self.open else "integer" if self.integer else "options"

    @classmethod
    def checked(cls, text: str, options: list[str] | tuple[str, ...], integer: bool = False,
                open: bool = False) -> "Question":
        text = (text or "").strip()
        if not text:
            raise QuestionError("The question is empty; pass the question as the first argument.")
        if len(text) > MAX_QUESTION_CHARS:
            raise QuestionError(f"The question is {len(text)} characters long; keep it under {MAX_QUESTION_CHARS}.")
        if integer or open:
            if options:
                what = "An open question" if open else "A question answered with an integer"
                raise QuestionError(f"{what} has no options; leave out -o/--option.")
            return cls(text=text, options=[], open=open)
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
# 4: the moderator's passages evaluate their common opening (its instructions, the question) once. Runs saved
# before the field existed read as 2.
DECODER = 4


class BallotSettings(BaseModel):
    """How each ballot is drawn and read, the same for a run and for an eval's runs: the temperature, debiasing,
    views or draws, the copy guard and the decoder's generation. DebateSettings and EvalSettings add the rest."""

    model_config = ConfigDict(extra="forbid")
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
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
    decoder: int = Field(default=DECODER, ge=2, le=DECODER)
    # How a round's prompts are laid out (see prompts.py): "conversation", each seat's own conversation, round after
    # round (its KV state carries over; each seat reads its peers' ballots itself); "shared", each round one prompt
    # whose opening (the question and the last round's ballots) every seat of a model shares, evaluated once per
    # model and copied to each seat. Runs saved before the field existed read as "conversation".
    layout: Literal["conversation", "shared"] = "conversation"


class DebateSettings(BallotSettings):
    """How a poll or debate is run: rounds, seed, sampling, the ballot's order, debiasing, views or draws, the copy
    guard and calibrated seat weights. Every field is kept in the run's manifest, so resume and replay run as it did."""

    rounds: int = Field(default=1, ge=1, le=MAX_ROUNDS)
    seed: int = Field(default=7, ge=0)
    # A rationale of 400 one-character tokens plus its JSON fits: the character limit binds before this does.
    max_tokens: int = Field(default=512, ge=32, le=4096)
    anonymous: bool = False
    early_stop: bool = True
    # The rationale comes before the vote, so that the model works the question out before it answers.
    reason_first: bool = False
    # Calibrated weight of each model (`localpanel calibrate`), and what they were calibrated on: the card adds a
    # weighted count to the plain one. Decoding does not read them.
    seat_weights: dict[str, float] | None = None
    weights_from: str | None = None
    # An open question: merge near-equal proposals into one candidate (--no-merge keeps every proposal apart).
    merge: bool = True

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
