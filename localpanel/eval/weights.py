"""Seat weights from held-out questions: what `localpanel calibrate` writes and `eval --weights` reads.

For independent voters of unequal skill the best weighted majority weights each by the log-odds of its
accuracy (Nitzan & Paroush 1982); with k options a right answer is one of k, so the weight is
log(p / (1 - p)) + log(k - 1): 0 at chance, growing with skill. p is not the raw share right but Laplace's
(right + 1) / (n + 2), which shrinks toward 1/2 the fewer ballots there are: 8 of 8 right weighs less than 980 of
1,000, and no seat is ever certain. A weight below chance is 0 (such a seat is not listened to).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from pydantic import BaseModel

from localpanel.atomic import atomic_write_json
from localpanel.errors import InputError
from localpanel.eval.questions import EvalQuestion
from localpanel.panel.counts import check_covers

def weight(right: float, n: int, options: float) -> float:
    """The log-odds weight of a seat right ``right`` times in ``n`` ballots, among ``options`` options."""
    p = (right + 1) / (n + 2)
    return max(0.0, math.log(p / (1 - p)) + math.log(max(options, 2.0) - 1))


def _plain(text: str) -> str:
    """Text as a question is known by across sets: lower case, punctuation and runs of spaces aside."""
    return " ".join("".join(c if c.isalnum() else " " for c in text.casefold()).split())


def question_key(q: EvalQuestion) -> str:
    """A question's identity across sets: its text and options, normalized (case, spaces, punctuation), not its
    id (ids differ between sources)."""
    plain = [_plain(q.question), sorted(_plain(o) for o in q.options)]
    return hashlib.sha256(json.dumps(plain, ensure_ascii=False).encode()).hexdigest()[:16]


def _exact_key(q: EvalQuestion) -> str:
    """The key weights written before keys were normalized hold: the text and options as they are."""
    return hashlib.sha256(json.dumps([q.question, sorted(q.options)], ensure_ascii=False).encode()).hexdigest()[:16]


class ModelWeight(BaseModel):
    accuracy: float  # round-1 accuracy of the model's seats on the calibration questions
    n: int  # ballots behind it
    weight: float


class Weights(BaseModel):
    """Each model's calibrated weight, with the accuracy and ballots behind it and the questions it was calibrated on."""

    panel: str
    source: str  # the calibration questions
    questions: list[str]  # their keys (question_key): scoring on any of them is refused
    models: dict[str, ModelWeight]

    def of(self, model: str) -> float:
        """The model's weight; a model the weights do not cover has none (``check_covers`` refuses it first)."""
        return self.models[model].weight

    def check_covers(self, models: list[str]) -> None:
        """Refuse, in one sentence, seats whose model these weights were not calibrated for."""
        check_covers({m: w.weight for m, w in self.models.items()}, models, self.source)

    def check_disjoint(self, questions: list[EvalQuestion]) -> None:
        held = set(self.questions)
        overlap = [q.id for q in questions if question_key(q) in held or _exact_key(q) in held]
        if overlap:
            raise InputError(f"{len(overlap)} of these questions (first: {overlap[0]}) are among the {len(held)} the "
                             f"weights were calibrated on ({self.source}); score on questions disjoint from those.")

    def line(self) -> str:
        return ", ".join(f"{m} {w.weight:.2f} ({100 * w.accuracy:.0f}% of {w.n})" for m, w in self.models.items())


def weights_path(home: Path, panel: str) -> Path:
    return home / "weights" / f"{panel}.json"


def save(weights: Weights, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, weights.model_dump(mode="json"))
    return path


def load(ref: str, home: Path) -> Weights:
    """A weights file, or the name of a panel calibrated under this store."""
    path = Path(ref)
    if not path.is_file():
        path = weights_path(home, ref)
    try:
        return Weights.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"No weights {ref!r}: give a weights file, or calibrate the panel first with "
                         f"`localpanel calibrate SOURCE --panel {ref}`.") from None
    except ValueError as exc:
        raise InputError(f"{path} is not a weights file ({str(exc).splitlines()[0]}).") from None


def from_results(panel, source: str, questions: list[EvalQuestion], results) -> Weights:
    """Weights from a round-1 eval's results: each model's seats' accuracy, over every ballot they cast."""
    models = [p.model for p in panel.participants]
    out = {}
    for model in dict.fromkeys(models):
        seats = [i for i, m in enumerate(models) if m == model]
        right = [float(r.votes[0][i] == r.answer) for r in results for i in seats]
        k = [max(2, len(q.options)) for q in questions] or [2]
        acc = sum(right) / len(right) if right else 0.0
        out[model] = ModelWeight(accuracy=round(acc, 6), n=len(right),
                                 weight=round(weight(sum(right), len(right), sum(k) / len(k)), 6))
    return Weights(panel=panel.name, source=source, questions=[question_key(q) for q in questions], models=out)


def weighted_scores(votes: list[str | None], confidences: list[dict[str, float]], weights: list[float],
                    answer: str) -> dict[str, float]:
    """The calibrated weighted majority (each vote counts its model's weight) and weighted probability vote (each
    ballot's probabilities times its weight); a tie of k scores 1/k with the answer among them."""
    out = {}
    tally: dict[str, float] = {}
    for v, w in zip(votes, weights):
        if v is not None:
            tally[v] = tally.get(v, 0.0) + w
    if tally and max(tally.values()) > 0:
        top = max(tally.values())
        leaders = [o for o, x in tally.items() if x == top]
        out["calibrated vote"] = (answer in leaders) / len(leaders)
    summed: dict[str, float] = {}
    for c, w in zip(confidences, weights):
        for o, p in c.items():
            summed[o] = summed.get(o, 0.0) + w * p
    if summed and max(summed.values()) > 0:
        top = max(summed.values())
        leaders = [o for o, x in summed.items() if x == top]
        out["calibrated weighted"] = (answer in leaders) / len(leaders)
    return out
