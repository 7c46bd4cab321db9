"""What the panel is measured against besides its best seat: the best model's own samples at equal tokens
(self-consistency), the panel without each seat, and the selection of the model whose seats agree most.

- ``self-consistency``: the panel's strongest model (``--sc-model``, else the calibrated weights' best) sampled as
  many times as the panel has seats, reason-first at its seats' temperature, scored by the plurality of its votes;
  its own run per question (``EVAL_DIR/sc/``), with its tokens and seconds.
- leave-one-seat-out and ``select`` (in the spirit of SLM-MUX) are read from the panel's round-1 ballots at no cost.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from localpanel.errors import InputError
from localpanel.eval.scores import Estimate, estimate, majority_score, weighted_score
from localpanel.weights.registry import Panel, Participant


def sc_model(panel: Panel, settings) -> str:
    """The model self-consistency samples: ``settings.sc_model``, else the calibrated weights' most accurate model
    of the panel; one sentence when neither names one, or the one named is not on the panel."""
    models = list(dict.fromkeys(p.model for p in panel.participants))
    if settings.sc_model:
        if settings.sc_model not in models:
            raise InputError(f"--sc-model {settings.sc_model!r} is not a model of the panel {panel.name}; its models "
                             f"are {', '.join(models)}.")
        return settings.sc_model
    if settings.weights is None:
        raise InputError("self-consistency samples the panel's strongest model: name it with --sc-model NAME, or give "
                         "calibrated --weights so that their most accurate model is used.")
    covered = [m for m in models if m in settings.weights.models]
    return max(covered, key=lambda m: (settings.weights.models[m].accuracy, -models.index(m)))


def sc_panel(panel: Panel, model: str) -> Panel:
    """As many samples of ``model`` as the panel has seats: its first seat's sampling, no persona, seeds of their own."""
    base = next(p for p in panel.participants if p.model == model)
    samples = [Participant(name=f"Sample {i + 1}", model=model, seed=1000 + i, temperature=base.temperature,
                           top_k=base.top_k, top_p=base.top_p, min_p=base.min_p, repeat_penalty=base.repeat_penalty)
               for i in range(len(panel.participants))]
    return Panel(name=f"{panel.name}-sc", participants=samples, moderator=model)


def select_score(votes: list[str | None], confidence: list[dict[str, float]], models: list[str],
                 accuracy: dict[str, float], answer: str) -> float:
    """The answer of the model whose seats agree most (the share of its seats on its most common answer); ties by
    the mean probability those seats gave that answer, then by calibrated accuracy, then panel order."""
    best, best_key = None, None
    for rank, model in enumerate(dict.fromkeys(models)):
        seats = [i for i, m in enumerate(models) if m == model]
        counts = Counter(votes[i] for i in seats if votes[i] is not None)
        if not counts:
            continue
        top = max(counts.values())
        leaders = sorted(v for v, c in counts.items() if c == top)
        prob = {v: float(np.mean([confidence[i].get(v, 0.0) for i in seats])) for v in leaders}
        choice = max(leaders, key=lambda v: prob[v])
        key = (top / len(seats), prob[choice], accuracy.get(model, 0.0), -rank)
        if best_key is None or key > best_key:
            best, best_key = choice, key
    return float(best == answer) if best is not None else 0.0


def without_each_seat(results, per_q: list[dict[str, float]], names: list[str],
                      seat_weights: list[float] | None) -> dict[str, dict[str, Estimate]]:
    """For each seat: the panel's round-1 vote, weighted vote and calibrated vote without it, minus the panel's own,
    paired over the questions (a positive figure: the panel does better without that seat)."""
    from localpanel.eval.weights import weighted_scores

    out: dict[str, dict[str, Estimate]] = {}
    for i, name in enumerate(names):
        keep = [j for j in range(len(names)) if j != i]
        diffs: dict[str, list[float]] = {"vote": [], "weighted": [], "calibrated vote": []}
        for r, s in zip(results, per_q):
            votes = [r.votes[0][j] for j in keep]
            diffs["vote"].append(majority_score(votes, r.answer) - s["vote"])
            if not r.integer and "weighted" in s:
                diffs["weighted"].append(weighted_score([r.confidence[j] for j in keep], r.answer) - s["weighted"])
                if seat_weights is not None and "calibrated vote" in s:
                    alone = weighted_scores(votes, [r.confidence[j] for j in keep], [seat_weights[j] for j in keep], r.answer)
                    diffs["calibrated vote"].append(alone.get("calibrated vote", 0.0) - s["calibrated vote"])
        out[name] = {m: estimate(d) for m, d in diffs.items() if d}
    return out
