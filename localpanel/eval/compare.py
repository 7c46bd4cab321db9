"""Two evals of the same questions side by side: each mode's accuracy in both and the paired difference over
the questions both have finished (the same id with the same answer), and the round-1 position effect in both.

Paired, because the questions differ far more in difficulty than two ways of running a panel do: over the
same questions the standard error of the difference is what tells a setting's effect from the draw of
questions. Either eval may be unfinished; only the questions both have finished count.
"""

from __future__ import annotations

import math

import numpy as np

from pydantic import BaseModel

from localpanel.errors import InputError
from localpanel.eval.render import pct, se
from localpanel.show.render import md_text
from localpanel.eval.report import question_scores
from localpanel.eval.results import QuestionResult
from localpanel.eval.runner import EvalManifest
from localpanel.eval.scores import Estimate, estimate


class Side(BaseModel):
    eval_dir: str
    label: str  # what the eval ran: panel, ballot style, debiasing, rounds, seed
    finished: int  # its questions finished, shared or not


class Paired(BaseModel):
    a: Estimate
    b: Estimate
    b_minus_a: Estimate


class Comparison(BaseModel):
    a: Side
    b: Side
    shared: int
    modes: dict[str, Paired]
    shown_first: Paired | None = None  # share of round-1 votes for the option shown first
    shown_last: Paired | None = None
    chance: float | None = None
    # Round 2 on: the share of a question's rationales that copy 8 or more words in a row from what their seat had
    # read, paired over the questions both debated (how two layouts or copy guards compare).
    copying: Paired | None = None
    # Tokens (prompt evaluated + ballot) and seconds of a question's debate, all rounds, paired.
    tokens: Paired | None = None
    seconds: Paired | None = None


def label(manifest: EvalManifest) -> str:
    s = manifest.settings
    return (f"{manifest.questions.name}, panel {manifest.panel.name}, {'reason-first' if s.reason_first else 'vote-first'}, "
            f"{'debiased' if s.debias else 'not debiased'}, {'votes drawn' if s.vote_draw else 'votes as views'}, "
            f"{f'copy guard {s.copy_guard} {s.copy_guard_by}, ' if s.copy_guard else ''}{'calibrated weights, ' if s.weights else ''}"
            f"{'shared layout, ' if s.layout == 'shared' else ''}"
            f"{s.rounds} round{'s' if s.rounds > 1 else ''}, seed {s.seed}")


def paired(xs: list[float], ys: list[float]) -> Paired:
    return Paired(a=estimate(xs), b=estimate(ys), b_minus_a=estimate([y - x for x, y in zip(xs, ys)]))


def compare(a: tuple[str, EvalManifest, list[QuestionResult]], b: tuple[str, EvalManifest, list[QuestionResult]]) -> Comparison:
    (dir_a, man_a, res_a), (dir_b, man_b, res_b) = a, b
    by_key = {(r.id, r.answer): r for r in res_b}
    pairs = [(r, by_key[(r.id, r.answer)]) for r in res_a if (r.id, r.answer) in by_key]
    if not pairs:
        raise InputError(f"{dir_a} and {dir_b} have no finished question in common: compare evals of the same questions.")
    # Each side's scores in every mode it has (calibrated ones included), read as its own report reads them.
    sa = {(r.id, r.answer): s for r, s in zip(res_a, question_scores(man_a, res_a)[0])}
    sb = {(r.id, r.answer): s for r, s in zip(res_b, question_scores(man_b, res_b)[0])}
    scores = [(sa[(x.id, x.answer)], sb[(y.id, y.answer)]) for x, y in pairs]
    modes = {}
    for mode in dict.fromkeys(m for pair in scores for side in pair for m in side):  # every mode both reports have
        if mode == "debate" and min(man_a.settings.rounds, man_b.settings.rounds) < 2:
            continue  # a one-round eval's "debate" is its vote
        both = [(s[mode], t[mode]) for s, t in scores if mode in s and mode in t]
        if both:
            modes[mode] = paired([s for s, _ in both], [t for _, t in both])

    def share(which: str) -> Paired | None:
        both = [(x.position_share(x.votes[0], getattr(x, which)), y.position_share(y.votes[0], getattr(y, which))) for x, y in pairs]
        both = [(s, t) for s, t in both if s is not None and t is not None]
        return paired([s for s, _ in both], [t for _, t in both]) if both else None

    def copy_share(r) -> float | None:
        words = [w for k in r.copied for w in k]
        return float(np.mean([w >= 8 for w in words])) if words else None

    copied = [(copy_share(x), copy_share(y)) for x, y in pairs]
    copied = [(s, t) for s, t in copied if s is not None and t is not None]
    options = [len(r.confidence[0]) for r, _ in pairs if r.confidence and r.confidence[0]]
    return Comparison(
        a=Side(eval_dir=str(dir_a), label=label(man_a), finished=len(res_a)),
        b=Side(eval_dir=str(dir_b), label=label(man_b), finished=len(res_b)),
        shared=len(pairs), modes=modes, shown_first=share("shown_first"), shown_last=share("shown_last"),
        chance=sum(1 / k for k in options) / len(options) if options else None,
        copying=paired([s for s, _ in copied], [t for _, t in copied]) if copied else None,
        tokens=paired([float(sum(x.tokens)) for x, _ in pairs], [float(sum(y.tokens)) for _, y in pairs]),
        seconds=paired([float(sum(x.seconds)) for x, _ in pairs], [float(sum(y.seconds)) for _, y in pairs]),
    )


def _diff(e: Estimate) -> str:
    return "-" if math.isnan(e.value) else f"{100 * e.value:+.1f} ± {se(e)}"


def rows(c: Comparison) -> list[tuple[str, str, str, str]]:
    """(what, A % ± stderr, B % ± stderr, B − A points ± paired stderr)."""
    out = [(mode, f"{pct(p.a)} ± {se(p.a)}", f"{pct(p.b)} ± {se(p.b)}", _diff(p.b_minus_a)) for mode, p in c.modes.items()]
    for what, p in (("votes for the option shown first", c.shown_first), ("votes for the option shown last", c.shown_last),
                    ("rationales copying 8+ words (round 2 on)", c.copying)):
        if p is not None:
            out.append((what, f"{pct(p.a)}% ± {se(p.a)}", f"{pct(p.b)}% ± {se(p.b)}", _diff(p.b_minus_a)))
    for what, p in (("tokens a question", c.tokens), ("seconds a question", c.seconds)):
        if p is not None:
            out.append((what, f"{p.a.value:.0f} ± {p.a.stderr:.0f}", f"{p.b.value:.0f} ± {p.b.stderr:.0f}",
                        f"{p.b_minus_a.value:+.0f} ± {p.b_minus_a.stderr:.0f}"))
    return out


def render_comparison(c: Comparison, fmt: str = "text") -> str:
    if fmt == "json":
        return c.model_dump_json(indent=2) + "\n"
    head = [f"A: {c.a.label} ({c.a.eval_dir}, {c.a.finished} finished)",
            f"B: {c.b.label} ({c.b.eval_dir}, {c.b.finished} finished)",
            f"{c.shared} questions finished in both; accuracy % ± stderr, B − A in points ± paired stderr"
            + (f"; chance {100 * c.chance:.0f}% for a position" if c.chance else "") + " (position shares: round 1)"]
    if fmt == "markdown":
        out = [f"- {md_text(line)}" for line in head] + ["", "| | A | B | B − A |", "|---|---:|---:|---:|"]
        out += [f"| {md_text(w)} | {a} | {b} | {d} |" for w, a, b, d in rows(c)]
        return "\n".join(out) + "\n"
    width = max(len(r[0]) for r in rows(c)) if c.modes else 10
    out = head + ["", f"{'':<{width}}  {'A':>12}  {'B':>12}  {'B − A':>14}"]
    out += [f"{w:<{width}}  {a:>12}  {b:>12}  {d:>14}" for w, a, b, d in rows(c)]
    return "\n".join(out) + "\n"
