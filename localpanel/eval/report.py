"""The eval report: accuracy per mode with standard errors, and what the debate did to the votes.

Conventions (as lm-evaluation-harness and inspect_ai): a mean accuracy's standard error is the sample
standard deviation (ddof=1) over questions divided by sqrt(n); the difference between two modes on the
same questions gets the paired standard error, that of the per-question differences. A majority with a
tie between k answers scores 1/k if the right answer is among them (a fair tie-break's expected score).
An answer that cannot be read does not exist here (the grammar forces every ballot); an abstention
(a failed ballot) is wrong.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from pydantic import BaseModel

from ..transcript import Transcript
from .questions import DU_ET_AL, EvalQuestion

MODE_TITLES = {
    "single": "single model (each seat, round 1)",
    "vote": "majority vote (round 1)",
    "weighted": "probability-weighted vote (round 1)",
    "debate": "debate (final-round majority)",
    "reflect": "self-reflection (first seat alone)",
}


class Estimate(BaseModel):
    value: float
    stderr: float
    n: int


def estimate(scores: list[float]) -> Estimate:
    n = len(scores)
    if n == 0:
        return Estimate(value=float("nan"), stderr=float("nan"), n=0)
    sd = float(np.std(scores, ddof=1)) if n > 1 else float("nan")
    return Estimate(value=float(np.mean(scores)), stderr=sd / math.sqrt(n) if n > 1 else float("nan"), n=n)


def majority_score(votes: list[str | None], answer: str) -> float:
    counts = Counter(v for v in votes if v is not None)
    if not counts:
        return 0.0
    top = max(counts.values())
    leaders = [v for v, c in counts.items() if c == top]
    return (answer in leaders) / len(leaders)


def majority(votes: list[str | None]) -> str | None:
    counts = Counter(v for v in votes if v is not None)
    if not counts:
        return None
    top = max(counts.values())
    leaders = [v for v, c in counts.items() if c == top]
    return leaders[0] if len(leaders) == 1 else None


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

    def scores(self) -> dict[str, float]:
        first = self.votes[0]
        out = {
            "single": float(np.mean([v == self.answer for v in first])),
            "vote": majority_score(first, self.answer),
            "debate": majority_score(self.votes[-1], self.answer),
        }
        if any(self.confidence):
            summed: Counter = Counter()
            for c in self.confidence:
                summed.update(c)
            best = max(summed.values()) if summed else 0
            leaders = [o for o, p in summed.items() if p == best]
            out["weighted"] = (self.answer in leaders) / len(leaders) if leaders else 0.0
        if self.reflect is not None:
            out["reflect"] = float(self.reflect[-1] == self.answer)
        return out


def read_question(index: int, q: EvalQuestion, debate: Transcript, reflect: Transcript | None) -> QuestionResult:
    names = [p.name for p in debate.participants]

    def votes(t: Transcript, who: list[str]) -> list[list[str | None]]:
        return [[next((x.vote for x in r.turns if x.participant == n and x.valid), None) for n in who] for r in t.rounds]

    def cost(t: Transcript) -> tuple[list[int], list[float]]:
        tokens = [sum(x.prompt_tokens - x.cached_tokens + x.completion_tokens for x in r.turns) for r in t.rounds]
        return tokens, [sum(x.seconds + x.rebuild_seconds for x in r.turns) for r in t.rounds]

    tokens, seconds = cost(debate)
    result = QuestionResult(
        index=index, id=q.id, answer=q.answer, votes=votes(debate, names),
        confidence=[next((x.confidence for x in debate.rounds[0].turns if x.participant == n), {}) for n in names],
        tokens=tokens, seconds=seconds,
    )
    if reflect is not None:
        rt, rs = cost(reflect)
        result.reflect = [v[0] for v in votes(reflect, [reflect.participants[0].name])]
        result.reflect_tokens, result.reflect_seconds = sum(rt), sum(rs)
    return result


class Conformity(BaseModel):
    round: int
    changes: int
    correct_to_wrong: int
    wrong_to_correct: int
    toward_majority: float | None  # share of changes to the previous round's majority answer


class Report(BaseModel):
    name: str
    source: str
    sha256: str
    questions: int
    participants: list[str]
    rounds: int
    modes: dict[str, Estimate]
    debate_minus_vote: Estimate | None
    by_participant: dict[str, list[Estimate]]  # per round
    by_round: dict[str, list[Estimate]]  # "single" (mean seat) and "majority", per round
    conformity: list[Conformity]
    agreement: list[list[float]]  # round 1: share of questions two seats gave the same answer
    correctness_correlation: float | None
    correlation_pairs: int = 0  # pairs of seats whose correctness varied (a seat always right or wrong has no correlation)
    effective_votes: float | None
    cost: dict[str, dict[str, float]]  # per mode: mean tokens and seconds per question
    reference: dict[str, float] | None  # Du et al.'s figures, when the set is theirs
    seconds: float  # wall time of the invocation that finished the eval
    compute_seconds: float  # time in the turns of every run, however many invocations and workers it took


def build_report(manifest, results: list[QuestionResult], seconds: float) -> Report:
    results = sorted(results, key=lambda r: r.index)
    names = [p.name for p in manifest.panel.participants]
    per_q = [r.scores() for r in results]
    modes = {m: estimate([s[m] for s in per_q if m in s]) for m in manifest.settings.modes if any(m in s for s in per_q)}
    diff = estimate([s["debate"] - s["vote"] for s in per_q]) if per_q and "debate" in modes and "vote" in modes else None
    n_rounds = max((len(r.votes) for r in results), default=0)
    by_participant = {
        n: [estimate([float(r.votes[k][i] == r.answer) for r in results if k < len(r.votes)]) for k in range(n_rounds)]
        for i, n in enumerate(names)
    }
    by_round = {
        "single": [estimate([float(np.mean([v == r.answer for v in r.votes[k]])) for r in results if k < len(r.votes)]) for k in range(n_rounds)],
        "majority": [estimate([majority_score(r.votes[k], r.answer) for r in results if k < len(r.votes)]) for k in range(n_rounds)],
    }
    agreement, correlation, effective, pairs = independence(results, len(names))
    reference = DU_ET_AL.get(manifest.questions.name)
    return Report(
        name=manifest.questions.name, source=manifest.questions.source, sha256=manifest.questions.sha256,
        questions=len(results), participants=names, rounds=n_rounds, modes=modes, debate_minus_vote=diff,
        by_participant=by_participant, by_round=by_round, conformity=conformity(results),
        agreement=agreement, correctness_correlation=correlation, correlation_pairs=pairs, effective_votes=effective,
        cost=cost(results, len(names)), reference=reference, seconds=round(seconds, 1),
        compute_seconds=round(sum(sum(r.seconds) + r.reflect_seconds for r in results), 1),
    )


def conformity(results: list[QuestionResult]) -> list[Conformity]:
    out = []
    n_rounds = max((len(r.votes) for r in results), default=0)
    for k in range(1, n_rounds):
        changes = c2w = w2c = toward = 0
        for r in results:
            if k >= len(r.votes):
                continue
            before, after = r.votes[k - 1], r.votes[k]
            lead = majority(before)
            for b, a in zip(before, after):
                if b is None or a is None or a == b:
                    continue
                changes += 1
                c2w += b == r.answer
                w2c += a == r.answer
                toward += lead is not None and a == lead
        out.append(Conformity(round=k + 1, changes=changes, correct_to_wrong=c2w, wrong_to_correct=w2c,
                              toward_majority=toward / changes if changes else None))
    return out


def independence(results: list[QuestionResult], n: int) -> tuple[list[list[float]], float | None, float | None, int]:
    """Round-1 agreement between seats, the mean correlation of their correctness, and the effective number of
    independent votes it implies (Kish: n / (1 + (n - 1) * mean correlation))."""
    if not results or n == 0:
        return [], None, None, 0
    answers = [[r.votes[0][i] for r in results] for i in range(n)]
    agreement = [[float(np.mean([a == b and a is not None for a, b in zip(answers[i], answers[j])])) for j in range(n)] for i in range(n)]
    correct = np.array([[float(r.votes[0][i] == r.answer) for r in results] for i in range(n)])
    pairs = []
    for i in range(n):
        for j in range(i + 1, n):
            if correct[i].std() > 0 and correct[j].std() > 0:
                pairs.append(float(np.corrcoef(correct[i], correct[j])[0, 1]))
    if n == 1:
        return agreement, None, 1.0, 0
    if not pairs:
        return agreement, None, None, 0
    rho = float(np.mean(pairs))
    effective = n / (1 + (n - 1) * rho) if 1 + (n - 1) * rho > 0 else float(n)
    return agreement, rho, float(min(max(effective, 1.0), n)), len(pairs)


def cost(results: list[QuestionResult], seats: int) -> dict[str, dict[str, float]]:
    """Mean tokens (prompt tokens evaluated + ballot tokens) and seconds per question, per mode."""
    if not results:
        return {}
    first_t = float(np.mean([r.tokens[0] for r in results]))
    first_s = float(np.mean([r.seconds[0] for r in results]))
    out = {
        "single": {"tokens": first_t / seats, "seconds": first_s / seats},
        "vote": {"tokens": first_t, "seconds": first_s},
        "weighted": {"tokens": first_t, "seconds": first_s},
        "debate": {"tokens": float(np.mean([sum(r.tokens) for r in results])), "seconds": float(np.mean([sum(r.seconds) for r in results]))},
    }
    if all(r.reflect is not None for r in results):
        out["reflect"] = {"tokens": float(np.mean([r.reflect_tokens for r in results])),
                          "seconds": float(np.mean([r.reflect_seconds for r in results]))}
    return out
