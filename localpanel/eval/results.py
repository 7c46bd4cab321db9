"""One question as the report reads it from its runs: the votes per round and seat, the round-1
probabilities, the cost, and what the same ballots give read another way (undebiased, drawn, as views)."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from localpanel.engine.draw import pick
from localpanel.eval.questions import EvalQuestion
from localpanel.eval.scores import majority_score, ranking_scores, squad_normalized, token_f1, weighted_score
from localpanel.panel.tally import undebiased_vote
from localpanel.runs.transcript import Transcript


class QuestionResult(BaseModel):
    """One question as the report reads it from its runs."""

    index: int
    id: str
    answer: str
    votes: list[list[str | None]]  # per round, per participant (panel order)
    confidence: list[dict[str, float]]  # round 1, per participant
    tokens: list[int]  # per round: prompt tokens evaluated + ballot tokens
    seconds: list[float]  # per round
    reflect: list[str | None] | None = None  # the reflect run's answer per round
    reflect_tokens: int = 0
    reflect_seconds: float = 0.0
    sc: list[str | None] | None = None  # self-consistency: each sample's vote
    sc_tokens: int = 0
    sc_seconds: float = 0.0
    # Round 1 without debiasing, per participant: the vote the same draw gives from the probabilities in the
    # order shown alone, and those probabilities (None when the run was not debiased).
    undebiased: list[str | None] | None = None
    raw_confidence: list[dict[str, float]] | None = None
    # When the votes were drawn: per round, per participant, the seat's most probable option of the same ballot.
    views: list[list[str | None]] | None = None
    # When the votes were views: round 1, per participant, the vote the draw at the seat's temperature gives from
    # the same ballot (the same Gumbel noise): what the eval would have scored before votes were views.
    drawn: list[str | None] | None = None
    shown_first: list[str | None] = []  # round 1, per participant: the option shown first (None: no options)
    shown_last: list[str | None] = []
    integer: bool = False  # answered with an integer: no options, so no probabilities
    failure: str | None = None  # why the question could not run at all
    # From round 2 on, per round and seat: the longest run of words the rationale shares with what it had read.
    copied: list[list[int]] = []
    # An open question: each seat's proposal and the candidate it was merged into (a right one reads as ``answer``),
    # whether any candidate was right, the merge's errors read from the gold, and each proposal's token F1.
    proposals: list[str | None] | None = None
    merged: list[str | None] | None = None
    ceiling: bool | None = None
    right_apart: int = 0  # right candidates beyond the first: right proposals the merge left apart
    wrong_merged: int = 0  # candidates that merged a right proposal with a wrong one
    proposal_f1: list[float] = []
    proposal_tokens: int = 0  # the proposal step's tokens and seconds (counted in round 1's too)
    proposal_seconds: float = 0.0

    def scores(self) -> dict[str, float]:
        out = self._round_one(self.votes[0], self.confidence)
        out["debate"] = majority_score(self.votes[-1], self.answer)
        if self.proposals is not None:
            out["single"] = float(np.mean([v == self.answer for v in self.proposals]))
            out["proposals"] = majority_score(self.merged or [], self.answer)
            out["ceiling"] = float(bool(self.ceiling))
        if self.reflect is not None:
            out["reflect"] = float(self.reflect[-1] == self.answer)
        if self.sc is not None:
            out["self-consistency"] = majority_score(self.sc, self.answer)
        return out

    def undebiased_scores(self) -> dict[str, float]:
        """single, vote and weighted as they would have been without debiasing (round 1 only: later rounds
        read what others wrote, which debiasing changed)."""
        if self.undebiased is None or self.raw_confidence is None:
            return {}
        return self._round_one(self.undebiased, self.raw_confidence)

    def view_scores(self) -> dict[str, float]:
        """single, vote and debate with each ballot's vote read as its seat's most probable option (only for an
        eval whose votes were drawn: otherwise they are the votes)."""
        if self.views is None:
            return {}
        out = self._round_one(self.views[0], self.confidence)
        out.pop("weighted", None)  # the probabilities are the same ballots': nothing to compare
        out["debate"] = majority_score(self.views[-1], self.answer)
        return out

    def drawn_scores(self) -> dict[str, float]:
        """single and vote in round 1 with each vote drawn at its seat's temperature from the same ballot (only
        for an eval whose votes were views; later rounds read texts the draw would have changed)."""
        if self.drawn is None:
            return {}
        out = self._round_one(self.drawn, self.confidence)
        out.pop("weighted", None)
        return out

    def _round_one(self, first: list[str | None], confidence: list[dict[str, float]]) -> dict[str, float]:
        out = {"single": float(np.mean([v == self.answer for v in first])), "vote": majority_score(first, self.answer)}
        if not self.integer:
            out["weighted"] = weighted_score(confidence, self.answer)
            out.update(ranking_scores(confidence, self.answer))
        return out

    def weighted_among(self, seats: list[int]) -> tuple[float, float] | None:
        """The weighted vote of some seats only, debiased and in the order shown (None: not debiased)."""
        if self.integer or self.raw_confidence is None:
            return None
        return (weighted_score([self.confidence[i] for i in seats], self.answer),
                weighted_score([self.raw_confidence[i] for i in seats], self.answer))

    def position_share(self, votes: list[str | None], shown: list[str | None]) -> float | None:
        """The share of this question's valid round-1 ballots that went to the option shown at that place."""
        pairs = [(v, s) for v, s in zip(votes, shown) if v is not None and s is not None]
        return float(np.mean([v == s for v, s in pairs])) if pairs else None


def redrawn(turn, temperature: float) -> str | None:
    """The vote a turn would have drawn at ``temperature`` from its (debiased) probabilities, with its own seed's
    Gumbel noise: the draw votes were before they were views."""
    if not turn.valid or not turn.confidence:
        return turn.vote if turn.valid else None
    values = list(turn.confidence)
    return values[pick(values, [turn.confidence[v] for v in values], temperature, turn.seed, "vote")]


def failed_question(index: int, q: EvalQuestion, names: list[str], rounds: int, reason: str) -> QuestionResult:
    """A question that could not run: every ballot of every round failed."""
    return QuestionResult(
        index=index, id=q.id, answer=q.answer, votes=[[None] * len(names) for _ in range(rounds)],
        confidence=[{} for _ in names], tokens=[0] * rounds, seconds=[0.0] * rounds, integer=q.integer, failure=reason,
        reflect=None,
    )


def read_question(index: int, q: EvalQuestion, debate: Transcript, reflect: Transcript | None) -> QuestionResult:
    names = [p.name for p in debate.participants]

    def votes(t: Transcript, who: list[str], what=lambda x: x.vote) -> list[list[str | None]]:
        return [[next((what(x) for x in r.turns if x.participant == n and x.valid), None) for n in who] for r in t.rounds]

    def cost(t: Transcript) -> tuple[list[int], list[float]]:
        """Per round: tokens evaluated and generated, and seconds; an open question's proposals count in round 1."""
        tokens = [sum(x.prompt_tokens - x.cached_tokens + x.completion_tokens for x in r.turns) for r in t.rounds]
        seconds = [sum(x.seconds + x.rebuild_seconds for x in r.turns) for r in t.rounds]
        if t.proposals and tokens:
            tokens[0] += sum(x.prompt_tokens - x.cached_tokens + x.completion_tokens for x in t.proposals)
            seconds[0] += sum(x.seconds + x.rebuild_seconds for x in t.proposals)
        return tokens, seconds

    tokens, seconds = cost(debate)
    first = {x.participant: x for x in debate.rounds[0].turns}
    result = QuestionResult(
        index=index, id=q.id, answer=q.answer, votes=votes(debate, names),
        confidence=[first[n].confidence if n in first else {} for n in names],
        tokens=tokens, seconds=seconds, integer=q.integer,
        shown_first=[first[n].option_order[0] if n in first and first[n].option_order else None for n in names],
        shown_last=[first[n].option_order[-1] if n in first and first[n].option_order else None for n in names],
    )
    result.copied = [[c.words for c in debate.copying if c.round == k] for k in range(2, len(debate.rounds) + 1)]
    if debate.settings.vote_draw and debate.options:
        result.views = votes(debate, names, lambda x: x.view)
    elif debate.options:
        draw_at = {p.name: p.temperature if debate.settings.temperature is None else debate.settings.temperature
                   for p in debate.participants}
        result.drawn = [redrawn(first[n], draw_at[n]) if n in first else None for n in names]
    if debate.settings.debias and debate.options and any(t.raw_confidence for t in first.values()):
        temperature = {p.name: debate.settings.vote_temperature(p.temperature) for p in debate.participants}
        result.undebiased = [undebiased_vote(first[n], temperature[n]) if n in first else None for n in names]
        result.raw_confidence = [(first[n].raw_confidence or {}) if n in first else {} for n in names]
    if q.open:
        _read_open(result, q, debate, names)
    if reflect is not None:
        if not isinstance(reflect, Transcript):  # the reflect run could not run: its answer failed
            result.reflect = [None]
            return result
        rt, rs = cost(reflect)
        result.reflect = [v[0] for v in votes(reflect, [reflect.participants[0].name])]
        result.reflect_tokens, result.reflect_seconds = sum(rt), sum(rs)
    return result




def _read_open(result: QuestionResult, q: EvalQuestion, debate: Transcript, names: list[str]) -> None:
    """An open question read against its accepted answers: every right text reads as ``q.answer`` (votes for
    different right candidates count as votes for the answer), with the merge's errors counted from the gold."""
    accepted = {squad_normalized(a) for a in q.answers}

    def right(text: str | None) -> bool:
        return text is not None and squad_normalized(text) in accepted

    def mark(text: str | None) -> str | None:
        return q.answer if right(text) else text

    def mark_probs(c: dict[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for k, p in c.items():
            out[mark(k)] = out.get(mark(k), 0.0) + p
        return out

    result.votes = [[mark(v) for v in r] for r in result.votes]
    result.confidence = [mark_probs(c) for c in result.confidence]
    if result.raw_confidence is not None:
        result.raw_confidence = [mark_probs(c) for c in result.raw_confidence]
    for field in ("undebiased", "drawn", "shown_first", "shown_last"):
        if getattr(result, field) is not None:
            setattr(result, field, [mark(v) for v in getattr(result, field)])
    if result.views is not None:
        result.views = [[mark(v) for v in r] for r in result.views]
    by_seat = {p.participant: p for p in debate.proposals}
    texts = [by_seat[n].vote if n in by_seat and by_seat[n].valid else None for n in names]
    result.proposals = [mark(t) for t in texts]
    result.proposal_f1 = [token_f1(t, q.answers) if t else 0.0 for t in texts]
    result.proposal_tokens = sum(x.prompt_tokens - x.cached_tokens + x.completion_tokens for x in debate.proposals)
    result.proposal_seconds = round(sum(x.seconds + x.rebuild_seconds for x in debate.proposals), 4)
    merge_map = debate.merge
    candidates = merge_map.candidates if merge_map else []
    result.merged = [mark(merge_map.candidate_of(n)) if merge_map else None for n in names]
    result.ceiling = any(right(c.text) or any(right(x) for x in c.proposals) for c in candidates)
    right_candidates = [c for c in candidates if any(right(x) for x in c.proposals)]
    result.right_apart = max(0, len(right_candidates) - 1)
    result.wrong_merged = sum(1 for c in right_candidates if not all(right(x) for x in c.proposals))
