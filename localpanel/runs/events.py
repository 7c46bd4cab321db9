"""Run events: one stream that the CLI's progress line, the web page and MCP progress all read.

A run is told as a sequence of typed events: a turn started, tokens so far, a ballot finished (after it is in
the journal), a round finished (its tally), the moderator finished, the run finished, stopped or failed.
``RunEvents`` turns the debate's callbacks into these events for one sink; a sink is any callable.
Events are plain pydantic models, so that they cross a thread, a JSON line or a server-sent event unchanged.
"""

from __future__ import annotations

import time
from typing import Annotated, Callable, Literal, Union

from pydantic import BaseModel, Field, TypeAdapter

from localpanel.panel.moderator import ModeratorReport
from localpanel.panel.protocol import Seat, Turn
from localpanel.panel.tally import tally


class _Event(BaseModel):
    run_id: str
    at: float = Field(0.0, description="seconds since the stream began")


class TurnStarted(_Event):
    type: Literal["turn_started"] = "turn_started"
    participant: str
    model: str
    round: int
    rounds: int


class TokensSoFar(_Event):
    type: Literal["tokens"] = "tokens"
    participant: str
    round: int
    rounds: int
    tokens: int
    # The decode rate since the seat's first token (its prompt's reading left out); None until there is one.
    tokens_per_s: float | None = None


class BallotFinished(_Event):
    """A ballot, once it is safe in the journal (``earlier``: it was there before this process started)."""

    type: Literal["ballot"] = "ballot"
    participant: str
    model: str
    round: int
    rounds: int
    vote: str | None
    rationale: str | None
    attributed_to: str | None
    confidence: dict[str, float]
    failure: str | None
    tokens: int
    seconds: float
    earlier: bool = False


class RoundFinished(_Event):
    type: Literal["round_finished"] = "round_finished"
    round: int
    rounds: int
    counts: dict[str, int]
    abstentions: int
    label: str
    winner: str | None


class ModeratorFinished(_Event):
    type: Literal["moderator"] = "moderator"
    summary: str


class RunFinished(_Event):
    type: Literal["finished"] = "finished"
    label: str
    winner: str | None
    counts: dict[str, int]
    stopped: str | None = None


class RunStopped(_Event):
    """Interrupted (Ctrl-C, a server stopping): the journal keeps every finished ballot; ``resume`` finishes it."""

    type: Literal["interrupted"] = "interrupted"
    reason: str
    resume: str


class RunFailed(_Event):
    type: Literal["failed"] = "failed"
    error: str


RunEvent = Annotated[
    Union[TurnStarted, TokensSoFar, BallotFinished, RoundFinished, ModeratorFinished, RunFinished, RunStopped, RunFailed],
    Field(discriminator="type"),
]
EVENT = TypeAdapter(RunEvent)
EventSink = Callable[[BaseModel], None]
TOKENS_EVERY = 0.25  # seconds between two token counts of one seat


class RunEvents:
    """The debate's callbacks (``progress``, ``turn``) in, run events out to ``sink``."""

    def __init__(self, run_id: str, options: list[str], seats: list[Seat], rounds: int, sink: EventSink,
                 clock: Callable[[], float] = time.monotonic):
        self.run_id, self.options, self.rounds, self.sink, self.clock = run_id, options, rounds, sink, clock
        self.models = {s.name: s.model.name for s in seats}
        self.born = clock()
        self.started: dict[tuple[str, int], float] = {}
        self.last_count: dict[str, float] = {}
        self.first_token: dict[tuple[str, int], tuple[float, int]] = {}  # (when, tokens) at a turn's first token
        self.turns: dict[int, dict[str, Turn]] = {}

    def _emit(self, event_type: type[_Event], **fields) -> None:
        self.sink(event_type(run_id=self.run_id, at=round(self.clock() - self.born, 3), **fields))

    def earlier(self, turns: list[Turn]) -> None:
        """Ballots the journal already held, told first so that a watcher sees the whole run."""
        for t in turns:
            self.turn(t, earlier=True)

    def progress(self, event: str, seat: Seat, round_no: int, tokens: int) -> None:
        now = self.clock()
        if event == "start":
            self.started[(seat.name, round_no)] = now
            self._emit(TurnStarted, participant=seat.name, model=seat.model.name, round=round_no, rounds=self.rounds)
        elif event == "token":
            # The rate is the decoding's: counted from the first token, after the prompt has been read (over the
            # turn's whole time it read "0.5 tok/s" while the model decoded at 20).
            t0, n0 = self.first_token.setdefault((seat.name, round_no), (now, tokens))
            if now - self.last_count.get(seat.name, -1e9) < TOKENS_EVERY:
                return
            self.last_count[seat.name] = now
            rate = round((tokens - n0) / (now - t0), 1) if now > t0 and tokens > n0 else None
            self._emit(TokensSoFar, participant=seat.name, round=round_no, rounds=self.rounds, tokens=tokens,
                       tokens_per_s=rate)

    def turn(self, t: Turn, earlier: bool = False) -> None:
        self._emit(
            BallotFinished, participant=t.participant, model=self.models.get(t.participant, "?"), round=t.round,
            rounds=self.rounds, vote=t.vote, rationale=t.rationale, attributed_to=t.attributed_to,
            confidence=t.confidence, failure=t.failure, tokens=t.completion_tokens, seconds=t.seconds, earlier=earlier,
        )
        done = self.turns.setdefault(t.round, {})
        done[t.participant] = t
        if len(done) == len(self.models):
            count = tally(self.options or sorted({x.vote for x in done.values() if x.valid}), list(done.values()))
            self._emit(RoundFinished, round=t.round, rounds=self.rounds, counts=count.counts,
                       abstentions=count.abstentions, label=count.label, winner=count.winner)

    def moderator(self, report: ModeratorReport) -> None:
        self._emit(ModeratorFinished, summary=report.summary)

    def finished(self, label: str, winner: str | None, counts: dict[str, int], stopped: str | None) -> None:
        self._emit(RunFinished, label=label, winner=winner, counts=counts, stopped=stopped)

    def interrupted(self, reason: str) -> None:
        kind = "poll" if self.rounds == 1 else "debate"
        self._emit(RunStopped, reason=reason, resume=f"localpanel {kind} --resume {self.run_id}")

    def failed(self, error: str) -> None:
        self._emit(RunFailed, error=error)


class Stop(Exception):
    """Raised from an event sink to stop a run between two tokens; the run stays resumable."""
