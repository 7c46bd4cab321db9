"""Other counts of the same ballots: rankings read from each ballot's probabilities (Borda, and Condorcet or the
cycle), and the count each vote weighted by its model's calibrated weight."""

from __future__ import annotations

from pydantic import BaseModel

from localpanel.errors import InputError
from localpanel.panel.protocol import Turn
from localpanel.panel.tally import Tally

class Rankings(BaseModel):
    """What the ballots' probabilities say beyond each ballot's top option: every valid ballot ranks all the
    options by its own probabilities (no extra decoding), and the rankings are counted two ways."""

    ballots: int
    # Borda count: an option gets a point for every option a ballot ranks below it (half for a tie).
    borda: dict[str, float]
    borda_leaders: list[str]
    # pairwise[a][b]: ballots ranking a above b.
    pairwise: dict[str, dict[str, int]]
    # The smallest set of options each of which beats every option outside it head to head (the Smith set): one
    # option is the Condorcet winner; several beat each other in a cycle (or tie).
    smith_set: list[str]

    @property
    def condorcet_winner(self) -> str | None:
        return self.smith_set[0] if len(self.smith_set) == 1 else None


def rankings(options: list[str], turns: list[Turn]) -> Rankings | None:
    """None without options, or without a valid ballot that has probabilities for them."""
    ranked = [t for t in turns if t.valid and t.confidence and all(o in t.confidence for o in options)]
    if len(options) < 2 or not ranked:
        return None
    borda = {o: 0.0 for o in options}
    pairwise = {a: {b: 0 for b in options if b != a} for a in options}
    for t in ranked:
        p = t.confidence
        for a in options:
            for b in options:
                if a == b:
                    continue
                if p[a] > p[b]:
                    borda[a] += 1.0
                    pairwise[a][b] += 1
                elif p[a] == p[b]:
                    borda[a] += 0.5
    top = max(borda.values())
    beats = {a: {b for b in pairwise[a] if pairwise[a][b] > pairwise[b][a]} for a in options}
    # The Smith set is a prefix of the options sorted by Copeland score (wins, half a point a pairwise tie).
    copeland = {a: len(beats[a]) + 0.5 * sum(pairwise[a][b] == pairwise[b][a] for b in pairwise[a]) for a in options}
    order = sorted(options, key=lambda o: (-copeland[o], o))
    smith = order
    for k in range(1, len(order) + 1):
        inside, outside = order[:k], order[k:]
        if all(b in beats[a] for a in inside for b in outside):
            smith = inside
            break
    return Rankings(ballots=len(ranked), borda={o: round(v, 6) for o, v in borda.items()},
                    borda_leaders=sorted(o for o, v in borda.items() if v == top), pairwise=pairwise, smith_set=sorted(smith))


def _pts(x: float) -> str:
    return f"{x:g}"


def rankings_lines(r: Rankings, plurality: Tally) -> list[str]:
    """The Borda count and the Condorcet winner (or the cycle), beside the plurality's leader."""
    order = sorted(r.borda, key=lambda o: (-r.borda[o], o))
    borda = " · ".join(f"{o} {_pts(r.borda[o])}" for o in order)
    lead = "/".join(r.borda_leaders)
    lines = [f"Borda count (a point for each option a ballot ranks lower): {borda}; leader {lead}."]
    if r.condorcet_winner:
        lines.append(f"Condorcet winner: {r.condorcet_winner} (ranked above each other option by more ballots than not).")
    else:
        lines.append(f"No Condorcet winner: {', '.join(r.smith_set)} beat each other in a cycle or tie head to head.")
    winners = {"plurality": "/".join(plurality.leaders) or "none", "Borda": lead,
               "Condorcet": r.condorcet_winner or "none"}
    if len(set(winners.values())) == 1:
        lines.append(f"Plurality, Borda and Condorcet agree: {lead}.")
    else:
        lines.append("They differ: " + ", ".join(f"{k} {v}" for k, v in winners.items()) + ".")
    return lines


def check_covers(weights: dict[str, float], models: list[str], calibrated: str) -> None:
    """Seats whose model has no calibrated weight are refused: a weight it does not have would be invented."""
    missing = [m for m in dict.fromkeys(models) if m not in weights]
    if missing:
        raise InputError(f"The weights calibrated on {calibrated} cover {', '.join(weights) or 'no model'}, not "
                         f"{', '.join(missing)}; calibrate this panel (`localpanel calibrate SOURCE`) or leave out the weights.")


class WeightedCount(BaseModel):
    """The votes counted with each seat's calibrated weight (its model's), beside the plain count."""

    source: str | None  # what the weights were calibrated on
    weights: dict[str, float]  # per participant
    counts: dict[str, float]
    leaders: list[str]


def weighted_count(options: list[str], turns: list[Turn], weights: dict[str, float], source: str | None) -> WeightedCount:
    counts = {o: 0.0 for o in options}
    for t in turns:
        if t.valid and t.vote in counts:
            counts[t.vote] += weights.get(t.participant, 1.0)
    top = max(counts.values(), default=0.0)
    leaders = sorted(o for o, c in counts.items() if c == top) if top > 0 else []
    return WeightedCount(source=source, weights=weights, counts={o: round(c, 6) for o, c in counts.items()}, leaders=leaders)


def weighted_line(w: WeightedCount, plain: Tally) -> str:
    counts = " · ".join(f"{o} {c:.2f}" for o, c in sorted(w.counts.items(), key=lambda kv: (-kv[1], kv[0])))
    lead = "/".join(w.leaders) or "none"
    agree = "agrees with" if w.leaders == plain.leaders else "differs from"
    return (f"Weighted by calibration ({w.source or 'given weights'}; each vote counts its model's weight): {counts}; "
            f"leader {lead}, which {agree} the plain count.")
