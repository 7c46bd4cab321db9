"""How one question is scored: accuracy per mode, with the conventions every report states.

A mean accuracy's standard error is the sample standard deviation (ddof=1) over questions divided by sqrt(n)
(as lm-evaluation-harness and inspect_ai). A majority with a tie between k answers scores 1/k if the right
answer is among them (a fair tie-break's expected score). Abstentions (failed ballots, and every ballot of a
question that could not run) follow CONVENTIONS.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from pydantic import BaseModel

MODE_TITLES = {
    "single": "single model (each seat, round 1)",
    "vote": "majority vote (round 1)",
    "weighted": "probability-weighted vote (round 1)",
    "borda": "Borda count of the ballots' rankings (round 1)",
    "condorcet": "Condorcet winner of the ballots' rankings (round 1)",
    "calibrated vote": "majority, each vote weighted by its model's calibrated weight (round 1)",
    "calibrated weighted": "probability vote, each ballot weighted by its model's calibrated weight (round 1)",
    "debate": "debate (final-round majority)",
    "reflect": "self-reflection (first seat alone)",
    "self-consistency": "the strongest model sampled once per seat, reason-first, plurality (equal tokens' baseline)",
    "select": "the answer of the model whose seats agree most (round 1; no extra cost)",
    "proposals": "plurality of the merged proposals (open questions; no vote)",
    "ceiling": "a right answer among the candidates at all (open questions: the most any vote can score)",
}
OPEN_MODES = ("proposals", "ceiling")


OPEN_CONVENTION = ("open questions (NQ-open, SQuAD, JSONL with 'answers'): a proposal, candidate or vote is right when "
                   "it equals an accepted answer after SQuAD's normalization (lower case, no punctuation, no a/an/the, "
                   "single spaces); votes for different candidates that are each right count as votes for the answer; "
                   "single is each seat's own proposal.")

CONVENTIONS = [
    "single: a failed ballot is a wrong answer.",
    "vote and debate: failed ballots are a bloc of their own that can win the count (one right answer and three "
    "failures score 0; a tie between k blocs scores 1/k when the right answer leads).",
    "weighted: the probabilities of the valid ballots, summed; a question whose ballots all failed scores 0; "
    "integer questions have no option probabilities and are left out of it (see its n).",
    "every mode is over the same questions: one that gives a question no answer (Borda, Condorcet or a calibrated "
    "vote with no valid ballot to count) scores 0 on it, as vote and weighted do.",
    "a question that could not run (too long for a context, options a model cannot tell apart) has every ballot "
    "failed; a machine error (weights missing, a model that does not load) stops the eval instead.",
    "borda and condorcet: each valid ballot ranks every option by its own probabilities; failed ballots rank "
    "nothing. A Borda tie between k options, or a cycle of k options with no Condorcet winner, scores 1/k when "
    "the right answer is among them.",
    OPEN_CONVENTION,
    "against the best seat: for each question the best seat is the one most often right on the other questions "
    "(leave-one-out), so that the comparison does not flatter it; the seat best on all of them is named too.",
]
RANKING_MODES = ("borda", "condorcet")

ABSTAIN = object()


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
    """The majority's score, failed ballots (None) counting as one bloc that can lead (see CONVENTIONS)."""
    counts = Counter(ABSTAIN if v is None else v for v in votes)
    if not counts:
        return 0.0
    top = max(counts.values())
    leaders = [v for v, c in counts.items() if c == top]
    return (answer in leaders) / len(leaders)


def weighted_score(confidences: list[dict[str, float]], answer: str) -> float:
    """The probabilities of the valid ballots summed per option; the leader scores (shared among a tie), none: 0."""
    summed: Counter = Counter()
    for c in confidences:
        summed.update(c)
    best = max(summed.values()) if summed else 0
    leaders = [o for o, p in summed.items() if p == best]
    return (answer in leaders) / len(leaders) if leaders else 0.0


def majority(votes: list[str | None]) -> str | None:
    counts = Counter(v for v in votes if v is not None)
    if not counts:
        return None
    top = max(counts.values())
    leaders = [v for v, c in counts.items() if c == top]
    return leaders[0] if len(leaders) == 1 else None


def ranking_scores(confidences: list[dict[str, float]], answer: str) -> dict[str, float]:
    """The Borda and Condorcet scores of one question's round-1 ballots (see CONVENTIONS); {} without any."""
    from localpanel.panel.protocol import Turn
    from localpanel.panel.counts import rankings

    ranked = [c for c in confidences if c]
    if not ranked:
        return {}
    options = list(ranked[0])
    turns = [Turn(participant=f"seat {i}", round=1, vote=max(c, key=c.get), confidence=c, option_order=options, seed=0)
             for i, c in enumerate(ranked)]
    r = rankings(options, turns)
    if r is None:
        return {}
    return {"borda": (answer in r.borda_leaders) / len(r.borda_leaders),
            "condorcet": (answer in r.smith_set) / len(r.smith_set)}




def squad_normalized(text: str) -> str:
    """SQuAD's answer normalization: lower case, no punctuation, no articles, single spaces."""
    import re
    import string

    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def token_f1(prediction: str, answers: list[str]) -> float:
    """SQuAD's token F1 against the best of the accepted answers."""
    best = 0.0
    pred = squad_normalized(prediction).split()
    for a in answers:
        gold = squad_normalized(a).split()
        common = sum((Counter(pred) & Counter(gold)).values())
        if common:
            p, r = common / len(pred), common / len(gold)
            best = max(best, 2 * p * r / (p + r))
    return best
