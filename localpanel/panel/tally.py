"""The tally stage: numbers derived from the ballots alone (never from the moderator's prose)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, computed_field

from localpanel.engine.draw import MAX_ROTATIONS, pick
from localpanel.panel.protocol import Turn

Label = Literal["unanimous", "supermajority", "majority", "plurality", "tie", "no votes"]


class Tally(BaseModel):
    """One round's count. Shares are of all participants: an abstention (failed turn) counts against every option."""

    options: list[str]
    counts: dict[str, int]
    abstentions: int
    participants: int
    shares: dict[str, float]
    # Mean over valid ballots of the model's own probability of each option.
    weighted: dict[str, float]
    label: Label
    winner: str | None
    leaders: list[str]

    @computed_field
    @property
    def margin(self) -> int | None:
        """How close it was: the fewest ballots that, voting otherwise, would change the leader (0 for a tie:
        one ballot decides it; None when nobody voted). Moving a vote from the leader to the runner-up closes
        the gap by two, so it is half the lead, rounded up."""
        if not self.leaders:
            return None
        if len(self.leaders) > 1:
            return 0
        lead = self.counts[self.leaders[0]] - max((c for o, c in self.counts.items() if o != self.leaders[0]), default=0)
        return -(-lead // 2)

    @computed_field
    @property
    def runners_up(self) -> list[str]:
        """The options right behind a sole leader (by name), to whom its margin would go."""
        if self.winner is None:
            return []
        rest = {o: c for o, c in self.counts.items() if o != self.winner}
        if not rest:
            return []
        top = max(rest.values())
        return sorted(o for o, c in rest.items() if c == top)

    @computed_field
    @property
    def probability_leader(self) -> str | None:
        """The option with the highest mean probability over the seats (None: no probabilities, or a tie)."""
        if not self.weighted or not any(self.weighted.values()):
            return None
        best = max(self.weighted.values())
        top = [o for o, w in self.weighted.items() if w == best]
        return top[0] if len(top) == 1 else None

    @computed_field
    @property
    def probability_agrees(self) -> bool | None:
        """Whether the votes' leader (or one of tied leaders) is also the seats' mean probability's leader."""
        if self.probability_leader is None or not self.leaders:
            return None
        return self.probability_leader in self.leaders


def tally(options: list[str], turns: list[Turn]) -> Tally:
    counts = np.zeros(len(options), dtype=int)
    probs = np.zeros(len(options))
    index = {o: i for i, o in enumerate(options)}
    valid = [t for t in turns if t.valid]
    for t in valid:
        counts[index[t.vote]] += 1
        if t.confidence:
            probs += np.array([t.confidence.get(o, 0.0) for o in options])
    n = len(turns)
    top = int(counts.max()) if len(counts) else 0
    # Tied leaders by name, so that "Tie — A/B" reads the same whatever order the options were typed in.
    leaders = sorted(options[i] for i in np.flatnonzero(counts == top)) if top else []
    if top == 0:
        label: Label = "no votes"
    elif len(leaders) > 1:
        label = "tie"
    elif top == n:
        label = "unanimous"
    elif top * 3 >= n * 2:
        label = "supermajority"
    elif top * 2 > n:
        label = "majority"
    else:
        label = "plurality"
    weighted = probs / len(valid) if valid else probs
    return Tally(
        options=options,
        counts={o: int(c) for o, c in zip(options, counts)},
        abstentions=n - len(valid),
        participants=n,
        shares={o: round(float(c) / n, 6) if n else 0.0 for o, c in zip(options, counts)},
        weighted={o: round(float(w), 6) for o, w in zip(options, weighted)},
        label=label,
        winner=leaders[0] if len(leaders) == 1 else None,
        leaders=leaders,
    )


def result_line(t: Tally) -> str:
    """'Unanimous — Yes (4/4 votes)', 'Majority — No (3/5 votes)', 'Tie — Yes/No (2/2)'; when the seats' mean
    probability favours another option than the votes, the line says so."""
    if t.label == "no votes":
        return f"No votes — all {t.participants} ballots failed"
    if t.label == "tie":
        line = f"Tie — {'/'.join(t.leaders)} ({'/'.join(str(t.counts[o]) for o in t.leaders)})"
    else:
        line = f"{t.label.capitalize()} — {t.winner} ({t.counts[t.winner]}/{t.participants} votes)"
    if t.abstentions:
        line += f", {t.abstentions} abstained"
    if t.probability_agrees is False:
        line += f"; but the seats' mean probability favours {t.probability_leader}"
    return line


def _votes(n: int) -> str:
    return f"{n} vote{'s' if n != 1 else ''}"


def margin_line(t: Tally) -> str | None:
    """How close the result was, and whether the seats' mean probability agrees with the votes."""
    if t.margin is None:
        return None
    if t.margin == 0:
        line = f"Margin: none — a tie; one ballot for {' or '.join(t.leaders)} would decide it."
    elif not t.runners_up:
        line = f"Margin: {_votes(t.margin)}."
    else:
        gap = t.counts[t.winner] - t.counts[t.runners_up[0]]
        outcome = "make it a tie" if gap % 2 == 0 else f"put {' or '.join(t.runners_up)} ahead"
        line = (f"Margin: {_votes(t.margin)} — {t.margin} seat{'s' if t.margin != 1 else ''} voting "
                f"{' or '.join(t.runners_up)} instead would {outcome}.")
    if t.probability_leader is not None:
        p = f"{100 * t.weighted[t.probability_leader]:.0f}%"
        if t.probability_agrees:
            line += f" The seats' mean probability agrees: {t.probability_leader} leads it ({p})."
        else:
            shown = " / ".join(f"{o} {100 * t.weighted[o]:.0f}%" for o in t.leaders)
            line += (f" The seats' mean probability does not agree: it favours {t.probability_leader} ({p}; "
                     f"{shown}).")
    elif t.weighted and any(t.weighted.values()):
        best = max(t.weighted.values())
        tied = sorted(o for o, w in t.weighted.items() if w == best)
        line += f" The seats' mean probability is a tie too: {' / '.join(f'{o} {100 * best:.0f}%' for o in tied)}."
    return line


class TurningPoint(BaseModel):
    round: int
    participant: str
    from_vote: str
    to_vote: str
    attributed_to: str | None
    rationale: str | None


class Influence(BaseModel):
    source: str  # who persuaded
    target: str  # whom
    count: int


def vote_matrix(participants: list[str], rounds: list[list[Turn]]) -> dict[str, list[str | None]]:
    """participant -> vote in each round (None: abstained, or the debate had stopped)."""
    matrix: dict[str, list[str | None]] = {p: [] for p in participants}
    for turns in rounds:
        by_name = {t.participant: t for t in turns}
        for p in participants:
            t = by_name.get(p)
            matrix[p].append(t.vote if t is not None and t.valid else None)
    return matrix


def turning_points(participants: list[str], rounds: list[list[Turn]]) -> list[TurningPoint]:
    """Every change of mind: a change of the seat's most probable option (its view) between its consecutive
    valid ballots. A drawn vote that changed while the view stayed is a redraw, not a change of mind."""
    points: list[TurningPoint] = []
    last: dict[str, str] = {}
    for turns in rounds:
        for t in sorted((t for t in turns if t.valid), key=lambda t: participants.index(t.participant)):
            before, view = last.get(t.participant), t.view
            if before is not None and before != view:
                points.append(
                    TurningPoint(
                        round=t.round, participant=t.participant, from_vote=before, to_vote=view,
                        attributed_to=t.attributed_to, rationale=t.rationale,
                    )
                )
            last[t.participant] = view
    return points


class ProbabilityPath(BaseModel):
    """A seat's probability for the option it ended on (its last view), round by round (None: no valid
    ballot, or no probabilities, that round)."""

    option: str
    probabilities: list[float | None]


def probability_paths(participants: list[str], rounds: list[list[Turn]]) -> dict[str, ProbabilityPath]:
    paths: dict[str, ProbabilityPath] = {}
    for name in participants:
        mine = [next((t for t in turns if t.participant == name and t.valid), None) for turns in rounds]
        last = next((t for t in reversed(mine) if t is not None and t.confidence), None)
        if last is None:
            continue
        option = last.view
        paths[name] = ProbabilityPath(
            option=option, probabilities=[t.confidence.get(option) if t is not None and t.confidence else None for t in mine]
        )
    return paths


class Shift(BaseModel):
    """A seat whose probability for its view moved a lot between two rounds although the view held."""

    round: int
    participant: str
    option: str  # the view it held
    before: float
    after: float
    toward: str  # the option that gained most
    argued_by: list[str]  # the peers who voted for ``toward`` in the round before


SHIFT_MIN = 0.2  # a move of at least this much probability is worth a line


def shifts_without_flip(participants: list[str], rounds: list[list[Turn]], at_least: float = SHIFT_MIN) -> list[Shift]:
    out: list[Shift] = []
    for k in range(1, len(rounds)):
        before = {t.participant: t for t in rounds[k - 1] if t.valid and t.confidence}
        for t in sorted((t for t in rounds[k] if t.valid and t.confidence), key=lambda t: participants.index(t.participant)):
            b = before.get(t.participant)
            if b is None or b.view != t.view:
                continue
            option = t.view
            p0, p1 = b.confidence.get(option, 0.0), t.confidence.get(option, 0.0)
            if abs(p1 - p0) < at_least:
                continue
            gains = {o: t.confidence.get(o, 0.0) - b.confidence.get(o, 0.0) for o in t.confidence if o != option}
            toward = max(sorted(gains), key=lambda o: gains[o]) if gains else option
            argued = sorted(x.participant for x in rounds[k - 1] if x.valid and x.participant != t.participant and x.vote == toward)
            out.append(Shift(round=t.round, participant=t.participant, option=option, before=p0, after=p1,
                             toward=toward, argued_by=argued))
    return out


def shift_sentence(s: Shift) -> str:
    """'Qwen Skeptic held No, but No 0.80 → 0.55 in round 2, toward Yes (argued by Qwen Pragmatist).'"""
    by = f" (argued by {', '.join(s.argued_by)})" if s.argued_by else ""
    return (f"{s.participant} held {s.option}, but {s.option} {s.before:.2f} → {s.after:.2f} in round {s.round}, "
            f"toward {s.toward}{by}.")


def persuasion_graph(points: list[TurningPoint]) -> list[Influence]:
    edges: dict[tuple[str, str], int] = {}
    for p in points:
        if p.attributed_to:
            edges[(p.attributed_to, p.participant)] = edges.get((p.attributed_to, p.participant), 0) + 1
    return [Influence(source=s, target=t, count=c) for (s, t), c in sorted(edges.items(), key=lambda e: (-e[1], e[0]))]


def most_persuasive(graph: list[Influence]) -> str | None:
    """The participant credited with the most vote changes; None when nobody was, or on a tie."""
    credit: dict[str, int] = {}
    for edge in graph:
        credit[edge.source] = credit.get(edge.source, 0) + edge.count
    if not credit:
        return None
    best = max(credit.values())
    top = [name for name, c in credit.items() if c == best]
    return top[0] if len(top) == 1 else None


def undebiased_vote(turn: Turn, temperature: float) -> str | None:
    """The vote the turn's own rule gives from its probabilities in the order shown alone: what the ballot
    would have been without debiasing. ``temperature`` is the vote's (``DebateSettings.vote_temperature``): 0,
    the most probable option, or the draw's, with the same Gumbel noise (from the recorded, 6-decimal
    probabilities, so a near-tie may rarely draw otherwise than the unrounded ones did)."""
    if not turn.valid or not turn.raw_confidence:
        return turn.vote if turn.valid else None
    values = list(turn.raw_confidence)
    return values[pick(values, [turn.raw_confidence[v] for v in values], temperature, turn.seed, "vote")]


class PositionEffect(BaseModel):
    """Where the options a ballot voted for had been shown, against chance, and what debiasing did."""

    ballots: int  # valid ballots among two or more options
    first: int  # of them, votes for the option shown first
    last: int  # votes for the option shown last
    chance: float  # the share either would get if the position did not matter (mean of 1/options)
    # Per option, the mean over ballots of (averaged over rotations) - (as shown): what debiasing moved.
    shift: dict[str, float]
    debiased: int  # ballots whose vote was scored under several rotations
    # The same counts for the votes the order shown alone would have drawn (None when not debiased).
    first_undebiased: int | None = None
    last_undebiased: int | None = None


def position_effect(options: list[str], turns: list[Turn], temperatures: dict[str, float]) -> PositionEffect | None:
    """None for a question without options (an integer answer is not shown in a position). ``temperatures``
    (per participant) redraw each debiased vote from its probabilities in the order shown alone."""
    valid = [t for t in turns if t.valid and len(t.option_order) > 1]
    if not options or not valid:
        return None
    debiased = [t for t in valid if t.raw_confidence]
    plain = {id(t): undebiased_vote(t, temperatures[t.participant]) for t in debiased}
    shift = {
        o: round(float(np.mean([t.confidence.get(o, 0.0) - t.raw_confidence.get(o, 0.0) for t in debiased])), 6)
        for o in options
    } if debiased else {}
    return PositionEffect(
        ballots=len(valid),
        first=sum(t.vote == t.option_order[0] for t in valid),
        last=sum(t.vote == t.option_order[-1] for t in valid),
        chance=round(float(np.mean([1 / len(t.option_order) for t in valid])), 6),
        shift=shift,
        debiased=len(debiased),
        first_undebiased=sum(plain[id(t)] == t.option_order[0] for t in debiased) if debiased else None,
        last_undebiased=sum(plain[id(t)] == t.option_order[-1] for t in debiased) if debiased else None,
    )


def position_line(p: PositionEffect) -> str:
    """'Shown first: 2 of 4 votes · shown last: 1 of 4 · chance 33% each.'"""
    line = (
        f"Voted for the option shown first: {p.first} of {p.ballots} ballots; shown last: {p.last} of {p.ballots} "
        f"(chance: {100 * p.chance:.0f}% each)."
    )
    if p.first_undebiased is not None and p.debiased == p.ballots:
        line += f" In the order shown alone they would have been {p.first_undebiased} and {p.last_undebiased}."
    return line


def _points(x: float) -> str:
    """A probability change in percentage points: "+12 pts", "-5 pts", "0 pts" (never "-0")."""
    n = round(100 * x)
    return f"{n:+d} pts" if n else "0 pts"


def shift_line(p: PositionEffect, options: list[str]) -> str:
    """'Debiasing moved the mean probability: SQLite +12 pts · DuckDB -5 pts ...' or why it did not."""
    if not p.shift:
        return "Not debiased: each vote was scored in the order shown only (--no-debias)."
    moved = " · ".join(f"{o} {_points(p.shift[o])}" for o in options if o in p.shift)
    if len(options) > MAX_ROTATIONS:
        return (f"Partly debiased: each vote was scored under {MAX_ROTATIONS} of the {len(options)} rotations of its "
                f"options (not every option in every position), averaged; that moved the mean probability: {moved}.")
    return f"Debiasing (each vote scored under rotations of the options, averaged) moved the mean probability: {moved}."
