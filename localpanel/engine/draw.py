"""The draw: how a choice among alternatives is made from the model's probabilities, so that nothing but the
alternatives themselves, the seed and the probabilities decides it.

- **Gumbel-max, keyed by the alternative's text.** Each alternative gets its own Gumbel noise from a hash of
  the turn seed, the field and the alternative's JSON text; the pick is the largest ``log p / T + noise``.
  That is an exact draw from ``p ** (1/T)`` (normalized), and it is invariant to the order in which the
  alternatives are listed by construction: no cumulative sum runs over a typed order.
- **A view, unless drawn.** By default a choice is the most probable alternative (``choose``): the seat's
  temperature shapes its words, not its vote. Drawing is a run setting (``--vote-draw``).
- **Rotations.** The options are shown in rotations of one canonical order; a vote is scored under several
  rotations of what its seat was shown and the probabilities averaged (permutation averaging, Zheng et al.,
  ICLR 2024), which cancels the part of the model's preference that follows the position.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Sequence

import numpy as np

# Scoring every rotation costs one re-evaluation of the prompt's tail each; past this many options only this
# many rotations are scored, evenly spaced, so that each option still visits this many spread positions.
MAX_ROTATIONS = 4


def gumbel(seed: int, field: str, value: Any) -> float:
    """The Gumbel noise of one alternative: a function of the seed, the field and the value's text alone."""
    key = f"{seed}|{field}|{json.dumps(value, ensure_ascii=False)}".encode()
    u = (int.from_bytes(hashlib.sha256(key).digest()[:8], "little") + 0.5) / 2.0**64
    return -math.log(-math.log(u))


def pick(values: Sequence[Any], probabilities: Sequence[float], temperature: float, seed: int, field: str) -> int:
    """The index of the alternative drawn from ``probabilities`` at ``temperature`` (greedy at 0); ties in
    the greedy case go to the smallest JSON text, so that no listing order decides."""
    p = np.asarray(probabilities, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logp = np.log(p)
    if temperature <= 0.0:
        best = logp.max()
        tied = [i for i in range(len(values)) if logp[i] == best]
        return min(tied, key=lambda i: json.dumps(values[i], ensure_ascii=False))
    keys = [logp[i] / temperature + gumbel(seed, field, v) for i, v in enumerate(values)]
    return int(np.argmax(keys))


def choose(values: Sequence[Any], probabilities: Sequence[float], temperature: float, seed: int, field: str,
           draw: bool = True) -> int:
    """Which alternative a choice takes: drawn at ``temperature`` (``draw``), or the most probable one, the
    model's view. The view is read from the probabilities as they are recorded (6 decimals), so that a vote is
    always the most probable option of its ballot's recorded probabilities; ties go to the smallest text."""
    if draw:
        return pick(values, probabilities, temperature, seed, field)
    return pick(values, [round(float(p), 6) for p in probabilities], 0.0, seed, field)


def shifts(k: int, cap: int = MAX_ROTATIONS) -> list[int]:
    """The rotations a vote among ``k`` options is scored under (0 is the order shown): all ``k`` of them, or
    ``cap`` evenly spaced ones when there are more options than that."""
    if k <= 1:
        return [0]
    n = min(k, cap)
    return sorted({(i * k) // n for i in range(n)})


def rotate(order: list[str], shift: int) -> list[str]:
    shift %= max(1, len(order))
    return order[shift:] + order[:shift]


def average(rows: Sequence[Sequence[float]]) -> list[float]:
    """Permutation averaging: the mean of each alternative's probability over the rotations scored."""
    return [float(x) for x in np.mean(np.asarray(rows, dtype=np.float64), axis=0)]
