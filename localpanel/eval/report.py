"""The eval report: accuracy per mode with standard errors over the questions (scores.py scores each one,
results.py reads each from its runs), and what the debate did to the votes: against the best seat, position
bias, conformity, copying, the seats' independence, the cost.

The difference between two modes on the same questions gets the paired standard error, that of the
per-question differences. An answer that cannot be read does not exist here (the grammar forces every
ballot). Abstentions follow CONVENTIONS, stated in every report.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from localpanel.eval.questions import DU_ET_AL
from localpanel.eval.baselines import select_score, without_each_seat
from localpanel.eval.results import QuestionResult
from localpanel.eval.scores import CONVENTIONS, OPEN_MODES, RANKING_MODES, Estimate, estimate, majority, majority_score

CALIBRATED = ["calibrated vote", "calibrated weighted"]
# Modes that need the options' probabilities: an integer question has none, and is left out of them (see its n).
OPTION_MODES = {"weighted", *RANKING_MODES, *CALIBRATED}


class PositionReport(BaseModel):
    """Round 1: the share of ballots for the option shown first and last (mean over questions, with stderr),
    as voted (debiased) and as the order shown alone would have voted; chance is the mean of 1/options."""

    chance: float
    first: dict[str, Estimate]  # "as voted", and "order shown only" when the votes were debiased
    last: dict[str, Estimate]


class Conformity(BaseModel):
    round: int
    changes: int
    correct_to_wrong: int
    wrong_to_correct: int
    toward_majority: float | None  # share of changes to the previous round's majority answer


class AgainstBest(BaseModel):
    """Is the panel worth it? Each mode against the best single seat, question by question."""

    by_model: dict[str, Estimate]  # round-1 accuracy of each model (its seats' mean)
    best_in_sample: str  # the seat most often right on all the questions
    chosen: dict[str, int]  # how often each seat was the leave-one-out choice
    best_seat: Estimate  # the score of the seat chosen on the other questions
    difference: dict[str, Estimate]  # mode - best seat, paired


class CopyShare(BaseModel):
    """Round ``round``: the share of rationales sharing 8 or more (12 or more) words in a row with earlier text."""

    round: int
    rationales: int
    eight: Estimate  # mean over questions of each question's share
    twelve: Estimate


class OpenSummary(BaseModel):
    """An eval's open questions: how often a right answer was among the candidates at all (the most any vote can
    score), the proposals' token F1, and the merge's errors read from the gold."""

    questions: int
    ceiling: Estimate
    proposal_f1: Estimate  # mean over seats, per question
    right_apart: int  # questions where the merge left two or more right proposals apart
    wrong_merged: int  # questions where it merged a right proposal with a wrong one
    candidates: float  # mean candidates per question

    def lines(self) -> list[str]:
        return [f"{self.questions} open questions, {self.candidates:.1f} candidates each on average; a right answer "
                f"among them: {100 * self.ceiling.value:.1f}% ± {100 * self.ceiling.stderr:.1f} (the ceiling of any vote)",
                f"proposals' token F1 (SQuAD's): {100 * self.proposal_f1.value:.1f} ± {100 * self.proposal_f1.stderr:.1f}",
                f"merge errors read from the gold: right proposals left apart in {self.right_apart} questions, a right "
                f"and a wrong proposal merged in {self.wrong_merged}"]


def open_summary(results: list[QuestionResult]) -> OpenSummary | None:
    opened = [r for r in results if r.proposals is not None]
    if not opened:
        return None
    return OpenSummary(questions=len(opened), ceiling=estimate([float(bool(r.ceiling)) for r in opened]),
                       proposal_f1=estimate([float(np.mean(r.proposal_f1)) if r.proposal_f1 else 0.0 for r in opened]),
                       right_apart=sum(r.right_apart > 0 for r in opened), wrong_merged=sum(r.wrong_merged > 0 for r in opened),
                       candidates=float(np.mean([len(set(x for x in r.merged or [] if x is not None)) for r in opened])))


class Report(BaseModel):
    """An eval's report: each mode's accuracy with its stderr, against the best seat, debiasing, views, position
    bias, conformity, copying, the seats' independence and the cost, over the questions it finished."""

    name: str
    source: str
    sha256: str
    questions: int
    participants: list[str]
    rounds: int
    modes: dict[str, Estimate]
    # Round-1 modes without debiasing (the same draws from the probabilities in the order shown), and the
    # paired difference debiased - undebiased per mode; empty when the eval was not debiased.
    undebiased: dict[str, Estimate] = {}
    debias_gain: dict[str, Estimate] = {}
    # The debiased figures over the very questions ``undebiased`` covers (those with raw probabilities), so that
    # the two sides and their difference are over one set (``modes`` covers every question).
    debiased_same: dict[str, Estimate] = {}
    positions: PositionReport | None = None
    # The weighted vote of each model's seats alone, debiased and in the order shown ("debiased", "shown"):
    # how debiasing moves the weighted vote of the whole panel, model by model. Empty with one model.
    weighted_by_model: dict[str, dict[str, Estimate]] = {}
    # An eval whose votes were drawn: single, vote and debate from the same ballots with each vote read as its
    # seat's most probable option, the paired difference views - drawn, and the changes of view per round. An
    # eval whose votes were views: round-1 single and vote as the draw would have had them (``as_drawn``).
    as_views: dict[str, Estimate] = {}
    as_drawn: dict[str, Estimate] = {}
    as_cast: dict[str, Estimate] = {}  # the votes as cast, over the same questions as as_views / as_drawn
    views_gain: dict[str, Estimate] = {}
    view_changes: list[Conformity] = []
    vote_draw: bool = False
    copy_guard: str | None = None  # "8 words": the copy guard the debates ran with (None: off)
    layout: str = "conversation"  # how later rounds were laid out (see DebateSettings.layout)
    weights: str | None = None  # the calibrated weights scored with, as a line (None: none)
    unscored: dict[str, str] = {}  # a mode asked for that has no score at all, and why
    debate_minus_vote: Estimate | None
    against_best: AgainstBest | None = None
    by_participant: dict[str, list[Estimate]]  # per round
    by_round: dict[str, list[Estimate]]  # "single" (mean seat) and "majority", per round
    conformity: list[Conformity]
    copying: list[CopyShare] = []
    agreement: list[list[float]]  # round 1: share of questions two seats gave the same answer
    correctness_correlation: float | None
    correlation_pairs: int = 0  # pairs of seats whose correctness varied (a seat always right or wrong has no correlation)
    effective_votes: float | None
    cost: dict[str, dict[str, float]]  # per mode: mean tokens and seconds per question
    conventions: list[str] = CONVENTIONS
    failed_questions: dict[str, str] = {}  # id -> why it could not run
    open_questions: OpenSummary | None = None
    # Each mode minus self-consistency (the strongest model's own samples), paired; empty without that mode.
    against_sc: dict[str, Estimate] = {}
    # Per seat: the panel without it minus the panel, for the vote, weighted and calibrated vote (paired).
    without_seat: dict[str, dict[str, Estimate]] = {}
    reference: dict[str, float] | None  # Du et al.'s figures, when the set is theirs
    seconds: float  # wall time of the invocation that finished the eval
    compute_seconds: float  # time in the turns of every run, however many invocations and workers it took


def build_report(manifest, results: list[QuestionResult], seconds: float) -> Report:
    results = sorted(results, key=lambda r: r.index)
    names = [p.name for p in manifest.panel.participants]
    per_q, wanted, unscored = question_scores(manifest, results)
    modes = {m: estimate([s[m] for s in per_q if m in s]) for m in wanted}
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
    raw = [(s, r.undebiased_scores()) for s, r in zip(per_q, results)]
    raw = [(s, u) for s, u in raw if u]
    undebiased = {m: estimate([u[m] for _, u in raw if m in u]) for m in ("single", "vote", "weighted") if any(m in u for _, u in raw)}
    gain = {m: estimate([s[m] - u[m] for s, u in raw if m in u and m in s]) for m in undebiased}
    debiased_same = {m: estimate([s[m] for s, u in raw if m in u and m in s]) for m in undebiased}
    viewed = [(s, v) for s, r in zip(per_q, results) if (v := r.view_scores())]
    as_views = {m: estimate([v[m] for _, v in viewed]) for m in ("single", "vote", "debate") if any(m in v for _, v in viewed)}
    views_gain = {m: estimate([v[m] - s[m] for s, v in viewed if m in s]) for m in as_views}
    as_cast = {m: estimate([s[m] for s, v in viewed if m in s]) for m in as_views}
    redraws = [(s, d) for s, r in zip(per_q, results) if (d := r.drawn_scores())]
    as_drawn = {m: estimate([d[m] for _, d in redraws]) for m in ("single", "vote") if any(m in d for _, d in redraws)}
    if as_drawn:
        views_gain = {m: estimate([s[m] - d[m] for s, d in redraws if m in s]) for m in as_drawn}
        as_cast = {m: estimate([s[m] for s, d in redraws if m in s]) for m in as_drawn}
    return Report(
        name=manifest.questions.name, source=manifest.questions.source, sha256=manifest.questions.sha256,
        questions=len(results), participants=names, rounds=n_rounds, modes=modes, debate_minus_vote=diff,
        against_best=against_best(results, per_q, names, [p.model for p in manifest.panel.participants]),
        undebiased=undebiased, debias_gain=gain, debiased_same=debiased_same, positions=positions(results), as_cast=as_cast,
        as_views=as_views, as_drawn=as_drawn, views_gain=views_gain, vote_draw=manifest.settings.vote_draw,
        copy_guard=(f"{s.copy_guard} {s.copy_guard_by}" if (s := manifest.settings).copy_guard else None),
        layout=manifest.settings.layout,
        weights=f"{w.source}: {w.line()}" if (w := manifest.settings.weights) is not None else None, unscored=unscored,
        view_changes=conformity([r.model_copy(update={"votes": r.views}) for r in results if r.views is not None]),
        weighted_by_model=weighted_by_model(results, [p.model for p in manifest.panel.participants]),
        failed_questions={r.id: r.failure for r in results if r.failure}, open_questions=open_summary(results),
        by_participant=by_participant, by_round=by_round, conformity=conformity(results), copying=copy_shares(results),
        agreement=agreement, correctness_correlation=correlation, correlation_pairs=pairs, effective_votes=effective,
        cost=cost(results, len(names)), reference=reference, seconds=round(seconds, 1),
        compute_seconds=round(sum(sum(r.seconds) + r.reflect_seconds + r.sc_seconds for r in results), 1),
        against_sc={m: estimate([q[m] - q["self-consistency"] for q in per_q]) for m in modes
                    if m not in ("self-consistency", "ceiling")} if "self-consistency" in modes else {},
        without_seat=without_each_seat(results, per_q, names, seat_weights_of(manifest)),
    )


def question_scores(manifest, results: list[QuestionResult]) -> tuple[list[dict[str, float]], list[str], dict[str, str]]:
    """Each question's score in every mode (calibrated ones included), the modes in report order, and the modes
    asked for that have no score at all (with why). Every mode is over the same questions: a question a mode gives
    no answer (no valid ballot to count) scores 0 in it; integer questions are left out of the option modes."""
    per_q = [r.scores() for r in results]
    models = [p.model for p in manifest.panel.participants]
    w = getattr(manifest.settings, "weights", None)
    accuracy = {m: x.accuracy for m, x in w.models.items()} if w is not None else {}
    if len(set(models)) > 1:
        for s, r in zip(per_q, results):
            s["select"] = select_score(r.votes[0], r.confidence, models, accuracy, r.answer)
    wanted = [*manifest.settings.modes,
              *(m for m in (*RANKING_MODES, "select", *OPEN_MODES) if m not in manifest.settings.modes)]
    unscored: dict[str, str] = {}
    if w is not None:
        from localpanel.eval.weights import weighted_scores

        seat_weights = [w.of(p.model) for p in manifest.panel.participants]
        if any(seat_weights):
            for s, r in zip(per_q, results):
                if not r.integer:
                    s.update(weighted_scores(r.votes[0], r.confidence, seat_weights, r.answer))
            wanted += CALIBRATED
        else:
            why = "every seat's calibrated weight is 0 (its model was at or below chance on the calibration questions)"
            unscored = {m: why for m in CALIBRATED}
    wanted = [m for m in wanted if any(m in s for s in per_q)]
    for s, r in zip(per_q, results):  # every mode over the same questions: one a question has no score in scores 0
        for m in wanted:
            if m not in s and (m not in OPTION_MODES or not r.integer):
                s[m] = 0.0
    return per_q, wanted, unscored


def against_best(results: list[QuestionResult], per_q: list[dict[str, float]], names: list[str],
                 models: list[str]) -> AgainstBest | None:
    """Each mode minus the best seat, paired over the questions. For each question the best seat is the one
    right most often on the *other* questions (leave-one-out; ties to the first in the panel)."""
    if len(names) < 2 or len(results) < 2:
        return None
    # A seat's own answer: its round-1 vote, or for an open question its proposal (as in the single mode).
    own = [r.proposals if r.proposals is not None else r.votes[0] for r in results]
    right = np.array([[float(own[q][i] == r.answer) for q, r in enumerate(results)] for i in range(len(names))])
    totals = right.sum(axis=1)
    chosen = [int(np.argmax(totals - right[:, q])) for q in range(len(results))]
    best = [right[i, q] for q, i in enumerate(chosen)]
    by_model = {m: estimate([float(np.mean([right[i, q] for i in range(len(names)) if models[i] == m]))
                             for q in range(len(results))]) for m in dict.fromkeys(models)}
    modes = [m for m in dict.fromkeys(m for s in per_q for m in s) if m not in ("single", "ceiling")]
    difference = {m: estimate([s[m] - b for s, b in zip(per_q, best) if m in s]) for m in modes
                  if any(m in s for s in per_q)}
    return AgainstBest(by_model=by_model, best_in_sample=names[int(np.argmax(totals))],
                       chosen={names[i]: chosen.count(i) for i in sorted(set(chosen))}, best_seat=estimate(best),
                       difference=difference)


def weighted_by_model(results: list[QuestionResult], models: list[str]) -> dict[str, dict[str, Estimate]]:
    if len(set(models)) < 2:
        return {}
    out = {}
    for model in dict.fromkeys(models):
        pairs = [p for r in results if (p := r.weighted_among([i for i, m in enumerate(models) if m == model])) is not None]
        if pairs:
            out[model] = {"debiased": estimate([d for d, _ in pairs]), "shown": estimate([s for _, s in pairs])}
    return out


def positions(results: list[QuestionResult]) -> PositionReport | None:
    with_options = [r for r in results if any(s is not None for s in r.shown_first)]
    if not with_options:
        return None

    def share(which: str, votes_of) -> Estimate:
        shares = [r.position_share(votes_of(r), getattr(r, which)) for r in with_options if votes_of(r) is not None]
        return estimate([x for x in shares if x is not None])

    chance = float(np.mean([1 / len(set(r.confidence[0]) or {1}) for r in with_options if r.confidence and r.confidence[0]] or [float("nan")]))
    kinds = {"as voted": lambda r: r.votes[0]}
    if any(r.undebiased is not None for r in with_options):
        kinds["order shown only"] = lambda r: r.undebiased
    return PositionReport(
        chance=chance,
        first={k: share("shown_first", f) for k, f in kinds.items()},
        last={k: share("shown_last", f) for k, f in kinds.items()},
    )


def copy_shares(results: list[QuestionResult]) -> list[CopyShare]:
    out = []
    for k in range(max((len(r.copied) for r in results), default=0)):
        per_q = [r.copied[k] for r in results if k < len(r.copied) and r.copied[k]]
        if per_q:
            out.append(CopyShare(round=k + 2, rationales=sum(len(x) for x in per_q),
                                 eight=estimate([float(np.mean([w >= 8 for w in x])) for x in per_q]),
                                 twelve=estimate([float(np.mean([w >= 12 for w in x])) for x in per_q])))
    return out


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
        "borda": {"tokens": first_t, "seconds": first_s},
        "condorcet": {"tokens": first_t, "seconds": first_s},
        "calibrated vote": {"tokens": first_t, "seconds": first_s},  # the same round-1 ballots, weighed
        "calibrated weighted": {"tokens": first_t, "seconds": first_s},
        "debate": {"tokens": float(np.mean([sum(r.tokens) for r in results])), "seconds": float(np.mean([sum(r.seconds) for r in results]))},
    }
    if all(r.reflect is not None for r in results):
        out["reflect"] = {"tokens": float(np.mean([r.reflect_tokens for r in results])),
                          "seconds": float(np.mean([r.reflect_seconds for r in results]))}
    if all(r.sc is not None for r in results):
        out["self-consistency"] = {"tokens": float(np.mean([r.sc_tokens for r in results])),
                                   "seconds": float(np.mean([r.sc_seconds for r in results]))}
    out["select"] = out["vote"]  # the same round-1 ballots, read another way
    opened = [r for r in results if r.proposals is not None]
    if opened and len(opened) == len(results):  # open questions: single is a proposal; proposals cost their step alone
        proposals = {"tokens": float(np.mean([r.proposal_tokens for r in opened])),
                     "seconds": float(np.mean([r.proposal_seconds for r in opened]))}
        out["proposals"] = proposals
        out["single"] = {k: v / seats for k, v in proposals.items()}
    return out


def seat_weights_of(manifest) -> list[float] | None:
    """Each seat's calibrated weight (None: no weights, or every one 0)."""
    w = getattr(manifest.settings, "weights", None)
    weights = [w.of(p.model) for p in manifest.panel.participants] if w is not None else None
    return weights if weights and any(weights) else None
