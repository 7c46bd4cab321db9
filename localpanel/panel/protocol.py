"""The protocol: a run of one round (a poll: independent ballots) or several (a debate: each round every seat
reads the others' last votes and rationales and may change its vote, crediting whoever persuaded it). ``Rounds``
plans every turn (who sees what, in which order, with which seed, what it had read) and asks the backend for
them round by round; its terms are in terms.py, what a seat is shown in prompts.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pydantic import BaseModel, ValidationError

from localpanel.engine.draw import rotate, shifts
from localpanel.engine.runtime import Backend, Generation, GenerationRequest, Message, Sampling
from localpanel.engine.scripts import scripts_of
from localpanel.errors import ContextOverflowError, QuestionError
from localpanel.panel.ballot import RATIONALE_MAX, REASONING_MAX, ballot_model
from localpanel.panel.proposals import MergeMap, merge, proposal_request, read_proposal
from localpanel.panel.prompts import (  # noqa: F401  (re-exported: the protocol's names as they always were)
    OWN_WORDS,
    canonical_order,
    display_order,
    first_round_prompt,
    labels_for,
    later_round_prompt,
    round_seed,
    seat_part,
    shared_prompt,
    shared_system_prompt,
    shuffled,
    system_prompt,
    turn_seed,
    wording,
)
from localpanel.panel.terms import (  # noqa: F401  (re-exported as above)
    COPY_GUARD,
    DECODER,
    MAX_OPTIONS,
    MAX_QUESTION_CHARS,
    MAX_ROUNDS,
    PEER_BALLOT_TOKENS,
    ROUND_FRAMING_TOKENS,
    DebateSettings,
    Question,
    Seat,
    StopReason,
    Turn,
)

class ProposalError(QuestionError):
    """An open question none of whose seats proposed an answer: the question cannot run (an eval records it as a
    question that could not run and goes on; the proposals stay in the journal)."""


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


class Rounds:
    """Runs a poll (one round) or a debate (several), round by round. Finished turns come in through ``done`` (from a
    journal) and are never redone."""

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
        self.rounds: list[dict[str, Turn]] = []
        # An open question's proposals (round 0) and their merge into candidates, once every seat has proposed.
        self.proposals: dict[str, Turn] = {}
        self.merged: MergeMap | None = None
        for turn in done or []:
            self._record(turn)
        self._options(question.options)
        if question.open and all(s.name in self.proposals for s in seats):
            self._settle()
        self.on_turn = on_turn or (lambda turn: None)
        self.on_progress = on_progress or (lambda event, seat, round_no, tokens: None)

    def _options(self, options: list[str]) -> None:
        self.canonical = canonical_order(options, self.settings.seed)
        # The rotations each vote is scored under (0: the order shown); one when not debiasing.
        self.rotations = shifts(len(options)) if self.settings.debias and len(options) > 1 else [0]

    def _settle(self) -> None:
        """The open question's candidates, merged from the proposals, become the options voted on."""
        self.merged = merge([self.proposals[s.name] for s in self.seats], self.settings.merge)
        if not self.merged.candidates:
            why = next((t.failure for t in self.proposals.values() if t.failure), "no answer")
            raise ProposalError(f"No seat proposed an answer to this question: every proposal failed (the first: {why}).")
        self.question = self.question.model_copy(update={"options": self.merged.options})
        self._options(self.question.options)

    def propose(self) -> None:
        """Every seat without a proposal proposes its answer, all at once (recorded ones go along as replays)."""
        seats = self.order(1)
        if all(s.name in self.proposals for s in seats):
            return
        n = len(self.seats)
        requests = [proposal_request(self.question, s, n, self.labels[s.name], self.settings, self.proposals.get(s.name))
                    for s in seats]
        for s, r in zip(seats, requests):
            if r.replay is None:
                self.on_progress("start", s, 0, 0)

        def done(i: int, g: Generation) -> None:
            turn = read_proposal(requests[i], g, self.settings.reason_first)
            self._record(turn)
            self.on_turn(turn)
            self.on_progress("done", seats[i], 0, turn.completion_tokens)

        self.backend.generate_many(requests, lambda i, k: self.on_progress("token", seats[i], 0, k), done)

    def _record(self, turn: Turn) -> None:
        if turn.round == 0:
            self.proposals[turn.participant] = turn
            return
        while len(self.rounds) < turn.round:
            self.rounds.append({})
        self.rounds[turn.round - 1][turn.participant] = turn

    def turn(self, name: str, round_no: int) -> Turn | None:
        return self.rounds[round_no - 1].get(name) if round_no <= len(self.rounds) else None

    # -- what each participant sees ------------------------------------------------------------------

    def plan(self, seat: Seat, round_no: int) -> TurnPlan:
        """The ballot type and the whole conversation (earlier rounds included) for one turn."""
        if self.settings.layout == "shared":
            return self.shared_plan(seat, round_no)
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

    def shared_plan(self, seat: Seat, round_no: int) -> TurnPlan:
        """One turn in the shared layout: a fresh prompt whose opening every seat reads alike (the question and every
        earlier round's ballots, each round in one order), then the seat's own part (see prompts.py)."""
        settings = self.settings
        seed = turn_seed(settings.seed, seat.participant, round_no)
        option_order = display_order(self.canonical, self.index[seat.name], round_no)
        history, order = [], None
        for r in range(2, round_no + 1):  # round r shows round r - 1's ballots, in an order of its own
            order = shuffled([s.name for s in self.seats], round_seed(settings.seed, r))
            history.append([(self.labels[p], t) for p in order if (t := self.turn(p, r - 1)) is not None])
        last = self.previous_vote(seat.name, round_no)

        def content(options: list[str]) -> str:
            own = seat_part(seat.participant, self.labels[seat.name], last, round_no, options)
            return shared_prompt(self.question, round_no, settings.rounds, history, bool(settings.copy_guard), own)

        variants = [content(rotate(option_order, k)) for k in self.rotations[1:]] or None
        messages = [
            Message(role="system", content=shared_system_prompt(len(self.seats), settings.rounds, self.question.integer,
                                                                settings.reason_first)),
            Message(role="user", content=content(option_order), variants=variants),
        ]
        return TurnPlan(seat, round_no, seed, option_order, order, self.ballot(seat, round_no), messages)

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

    def check_fits(self, extra: int = 0) -> None:
        """Before any weights load: the first prompt plus a ballot (and ``extra`` tokens) must fit every participant's
        context. A cheap upper bound settles it for ordinary questions; the exact count is taken only when the bound
        is too big."""
        for seat in self.seats:
            messages = (proposal_request(self.question, seat, len(self.seats), self.labels[seat.name], self.settings).messages
                        if self.question.open and self.merged is None else self.plan(seat, 1).messages)
            window = self.backend.context_length(seat.model, seat.model_path)
            if self.backend.token_bound(seat.model, seat.model_path, messages) + self.settings.max_tokens + extra <= window:
                continue
            need = self.backend.count_tokens(seat.model, seat.model_path, messages) + self.settings.max_tokens + extra
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
        if self.question.open and self.merged is None:
            self.propose()
            self._settle()
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
            scripts=scripts_of([self.question.text, *self.question.options, self.question.context])
            if self.settings.decoder >= 3 else None,
            seed=plan.seed,
            max_tokens=self.settings.max_tokens,
            context_base=self.plan(seat, 1).messages,
            context_extra=self.context_growth(),
            replay=list(replay.tokens) if replay is not None else None,
            avoid=self.avoid(plan) if self.settings.copy_guard and plan.round > 1 else None,
            quotable=[self.question.text, *self.question.options, *([self.question.context] if self.question.context else [])]
            if self.settings.copy_guard and plan.round > 1 else None,
            copy_guard=self.settings.copy_guard if plan.round > 1 else None,
            copy_guard_by=self.settings.copy_guard_by,
            share_prefix=self.settings.layout == "shared",
        )

    def avoid(self, plan: TurnPlan) -> list[str]:
        """What a later-round rationale may not copy a long run from: every earlier rationale (the peers' and its
        own) and the instructions of its prompts. Not the question or the options, which it may quote."""
        texts = [t.rationale for r in range(1, plan.round) for t in self.rounds[r - 1].values() if t.valid and t.rationale]
        return texts + wording(plan.seat.participant, len(self.seats), self.settings.rounds, self.labels[plan.seat.name],
                               self.question.integer, self.settings.reason_first, plan.round, layout=self.settings.layout)

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


Debate = Rounds  # its name before polls were known to run through it too
