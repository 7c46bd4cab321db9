"""The eval report as a terminal table (lm-eval's columns), Markdown, self-contained HTML, or JSON."""

from __future__ import annotations

import html
import math

from localpanel.eval.report import Report
from localpanel.eval.scores import MODE_TITLES, Estimate
from localpanel.show.charts import PALETTE, svg
from localpanel.show.render import md_text

FORMATS = ("text", "markdown", "html", "json")


def pct(e: Estimate | None) -> str:
    return "-" if e is None or math.isnan(e.value) else f"{100 * e.value:.1f}"


def se(e: Estimate | None) -> str:
    return "-" if e is None or math.isnan(e.stderr) else f"{100 * e.stderr:.1f}"


def rows(r: Report) -> list[tuple[str, str, str, str, str, str]]:
    """(mode, accuracy %, ± stderr, reference %, tokens per question, seconds per question)."""
    out = []
    for mode, e in r.modes.items():
        ref = r.reference.get(mode) if r.reference else None
        c = r.cost.get(mode, {})
        out.append((mode, pct(e), se(e), f"{ref:.1f}" if ref is not None else "", f"{c['tokens']:.0f}" if c else "",
                    f"{c['seconds']:.1f}" if c else ""))
    return out


def render_report(r: Report, fmt: str = "text") -> str:
    if fmt == "json":
        return r.model_dump_json(indent=2) + "\n"
    if fmt == "markdown":
        return markdown(r)
    if fmt == "html":
        return page(r)
    return text(r)


def _lines(r: Report) -> dict[str, list[str]]:
    """The parts every format shares, as plain sentences."""
    d = r.debate_minus_vote
    diff = f"debate − vote: {100 * d.value:+.1f} points ± {se(d)} (paired over {d.n} questions)" if d else ""
    def changes(c, what: str) -> str:
        toward = f", {100 * c.toward_majority:.0f}% of them toward the previous round's majority" if c.toward_majority is not None else ""
        return f"round {c.round}: {c.changes} {what}, {c.correct_to_wrong} right→wrong, {c.wrong_to_correct} wrong→right{toward}"

    conf = [changes(c, "changes of vote (drawn)" if r.vote_draw else "changes") for c in r.conformity]
    conf += [changes(c, "changes of view (most probable option)") for c in r.view_changes]
    conf += [f"round {c.round}: {pct(c.eight)}% ± {se(c.eight)} of {c.rationales} rationales share 8 or more words in a "
             f"row with text their seat had read, {pct(c.twelve)}% ± {se(c.twelve)} 12 or more" for c in r.copying]
    if r.copying:
        conf.append(f"copy guard: {r.copy_guard or 'off'}")
    if r.layout != "conversation":
        conf.append(f"layout: {r.layout} (each round one prompt whose opening every seat of a model shares)")
    views = []

    def compare(title: str, other: dict, cast_as: str, other_as: str) -> None:
        views.append(title)
        for mode, o in other.items():
            g, cast = r.views_gain.get(mode), r.as_cast.get(mode)
            views.append(f"{mode}: {pct(cast)} ± {se(cast)} {cast_as}, {pct(o)} ± {se(o)} {other_as}, both over {o.n} "
                         f"questions; difference {100 * g.value:+.1f} ± {se(g)} points (paired)" if g else "")

    if r.as_views:
        compare("Votes were drawn at each seat's temperature (--vote-draw). The same ballots with each vote read as its "
                "seat's most probable option:", r.as_views, "drawn", "as views")
    if r.as_drawn:
        compare("Votes are each seat's most probable option. The same round-1 ballots with each vote drawn at its "
                "seat's temperature (the same Gumbel noise; how votes were cast before they were views):",
                r.as_drawn, "as views", "drawn")
    indep = []
    if r.effective_votes is not None:
        total = len(r.participants) * (len(r.participants) - 1) // 2
        rho = (f"mean correlation of the seats' correctness {r.correctness_correlation:.2f} over {r.correlation_pairs} of "
               f"{total} pairs (a seat always right or always wrong has none); " if r.correctness_correlation is not None else "")
        indep.append(f"{len(r.participants)} seats, {r.effective_votes:.1f} effective independent votes ({rho}Kish: n / (1 + (n−1)ρ))")
    debias = []
    for mode, raw in r.undebiased.items():
        g = r.debias_gain.get(mode)
        same = r.debiased_same.get(mode, r.modes.get(mode))  # a report saved before it had no debiased_same
        debias.append(f"{mode}: {pct(same)} ± {se(same)} debiased, {pct(raw)} ± {se(raw)} in the order shown, both over "
                      f"{raw.n} questions; difference {100 * g.value:+.1f} ± {se(g)} points (paired)" if g else "")
    for model, w in r.weighted_by_model.items():
        debias.append(f"weighted vote of {model}'s seats alone: {pct(w['debiased'])} ± {se(w['debiased'])} debiased, "
                      f"{pct(w['shown'])} ± {se(w['shown'])} in the order shown")
    pos = []
    if r.positions:
        for where, ests in (("first", r.positions.first), ("last", r.positions.last)):
            pos.append(f"round-1 votes for the option shown {where}: " + ", ".join(f"{pct(e)}% ± {se(e)} {k}" for k, e in ests.items())
                       + f" (chance {100 * r.positions.chance:.0f}%)")
    best = []
    if (a := r.against_best) is not None:
        chosen = ", ".join(f"{name} {k}" for name, k in a.chosen.items())
        best.append(f"best seat (chosen on the other questions, leave-one-out): {pct(a.best_seat)} ± {se(a.best_seat)} "
                    f"(chosen: {chosen}; best on all questions: {a.best_in_sample})")
        best += [f"{mode} − best seat: {100 * d.value:+.1f} ± {se(d)} points (paired over {d.n} questions)"
                 for mode, d in a.difference.items()]
        best.append("per model (round 1): " + ", ".join(f"{m} {pct(e)} ± {se(e)}" for m, e in a.by_model.items()))
    notes = [f"{mode}: n = {e.n} questions" for mode, e in r.modes.items()]
    notes += [f"{mode}: no score, since {why}" for mode, why in r.unscored.items()]
    if r.weights:
        notes.append(f"calibrated weights ({r.weights}), from questions disjoint from these")
    notes += [f"could not run: {qid} ({why})" for qid, why in r.failed_questions.items()]
    sc = [f"{mode} − self-consistency: {100 * d.value:+.1f} ± {se(d)} points (paired over {d.n} questions)"
          for mode, d in r.against_sc.items()]
    if sc and "self-consistency" in r.cost:
        c = r.cost["self-consistency"]
        sc.append(f"self-consistency spent {c['tokens']:.0f} tokens and {c['seconds']:.1f} s a question; the debate "
                  f"{r.cost['debate']['tokens']:.0f} and {r.cost['debate']['seconds']:.1f} s")
    seats = [f"without {name}: " + ", ".join(f"{m} {100 * d.value:+.1f} ± {se(d)}" for m, d in ds.items())
             for name, ds in r.without_seat.items() if ds]
    if seats:
        seats.insert(0, "the panel without each seat minus the whole panel, in points, paired over the questions "
                        "(positive: the panel does better without that seat)")
    return {"sc": sc, "seats": seats, "open": r.open_questions.lines() if r.open_questions else [], "diff": [diff] if diff else [], "best": best, "views": views, "conformity": conf, "independence": indep, "debias": debias, "positions": pos,
            "conventions": r.conventions + notes}


def text(r: Report) -> str:
    out = [f"localpanel eval · {r.name} ({r.source}) · {r.questions} questions · {len(r.participants)} seats · {r.rounds} rounds",
           f"questions sha256 {r.sha256[:16]}… · {r.compute_seconds:.0f} s in the turns{f', {r.seconds:.0f} s wall' if r.seconds else ''}", ""]
    ref = bool(r.reference)
    table = rows(r)
    w = max([10, *(len(row[0]) + 1 for row in table)])  # "calibrated weighted" is wider than the rest
    head = f"{'Mode':<{w}}|{'Metric':<6}|{'Value':>7}|{'±':^3}|{'Stderr':>7}|" + (f"{'Du et al.':>10}|" if ref else "") + f"{'tokens/q':>9}|{'s/q':>7}"
    out += [head, "-" * len(head)]
    for mode, acc, se, refv, tok, sec in table:
        out.append(f"{mode:<{w}}|{'acc':<6}|{acc:>7}|{'±':^3}|{se:>7}|" + (f"{refv:>10}|" if ref else "") + f"{tok:>9}|{sec:>7}")
    parts = _lines(r)
    out += [""] + parts["diff"]
    if parts["open"]:
        out += ["", "Open questions"] + [f"  {line}" for line in parts["open"]]
    if parts["sc"]:
        out += ["", "Against the strongest model's own samples (self-consistency)"] + [f"  {line}" for line in parts["sc"]]
    if parts["seats"]:
        out += ["", "What each seat adds"] + [f"  {line}" for line in parts["seats"]]
    if parts["best"]:
        out += ["", "Against the best seat"] + [f"  {line}" for line in parts["best"]]
    if parts["views"]:
        out += ["", "Drawn votes and views"] + [f"  {line}" for line in parts["views"]]
    out += ["", "Accuracy by round (%)", "  " + " " * 22 + "".join(f"{'R' + str(k + 1):>8}" for k in range(r.rounds))]
    for label, ests in [("majority", r.by_round["majority"]), ("mean seat", r.by_round["single"])] + list(r.by_participant.items()):
        out.append(f"  {label[:22]:<22}" + "".join(f"{pct(e):>8}" for e in ests))
    if parts["debias"] or parts["positions"]:
        out += ["", "Position bias (round 1)"] + [f"  {line}" for line in parts["debias"] + parts["positions"]]
    out += ["", "Abstentions and counts"] + [f"  {line}" for line in parts["conventions"]]
    if parts["conformity"]:
        out += ["", "Conformity"] + [f"  {line}" for line in parts["conformity"]]
    if r.agreement:
        width = max(len(p) for p in r.participants)
        out += ["", "Round-1 agreement (share of questions with the same answer)"]
        for name, row in zip(r.participants, r.agreement):
            out.append(f"  {name:<{width}}  " + " ".join(f"{x:.2f}" for x in row))
        out += [f"  {line}" for line in parts["independence"]]
    if ref:
        out += ["", "Du et al. 2023: ChatGPT, 3 agents, 2 rounds (their table; not these models)."]
    return "\n".join(out) + "\n"


def markdown(r: Report) -> str:
    ref = bool(r.reference)
    out = [f"# localpanel eval: {md_text(r.name)}", "",
           f"{r.questions} questions from {md_text(r.source)} (sha256 `{r.sha256[:16]}…`), {len(r.participants)} seats, {r.rounds} rounds, "
           f"{r.compute_seconds:.0f} s in the turns"
           + (f" ({r.seconds:.0f} s wall in the invocation that finished it)" if r.seconds else ""), "",
           "| Mode | Accuracy % | ± Stderr |" + (" Du et al. % |" if ref else "") + " tokens/q | s/q |",
           "|---|---:|---:|" + ("---:|" if ref else "") + "---:|---:|"]
    for mode, acc, se, refv, tok, sec in rows(r):
        out.append(f"| {MODE_TITLES.get(mode, mode)} | {acc} | {se} |" + (f" {refv} |" if ref else "") + f" {tok} | {sec} |")
    # Every line below carries given text (seat names, question ids, sources): escaped, so it stays text.
    parts = {k: [md_text(line) for line in lines] for k, lines in _lines(r).items()}
    out += [""] + parts["diff"]
    if parts["open"]:
        out += ["", "## Open questions", ""] + [f"- {md_text(line)}" for line in parts["open"]]
    if parts["sc"]:
        out += ["", "## Against the strongest model's own samples", ""] + [f"- {md_text(line)}" for line in parts["sc"]]
    if parts["seats"]:
        out += ["", "## What each seat adds", ""] + [f"- {md_text(line)}" for line in parts["seats"]]
    if parts["best"]:
        out += ["", "## Against the best seat", ""] + [f"- {line}" for line in parts["best"]]
    if parts["views"]:
        out += ["", "## Drawn votes and views", ""] + [f"- {line}" for line in parts["views"]]
    out += ["", "## Accuracy by round (%)", "", "| | " + " | ".join(f"Round {k + 1}" for k in range(r.rounds)) + " |",
                                   "|---|" + "---:|" * r.rounds]
    for label, ests in [("majority", r.by_round["majority"]), ("mean seat", r.by_round["single"])] + list(r.by_participant.items()):
        out.append(f"| {md_text(label)} | " + " | ".join(pct(e) for e in ests) + " |")
    if parts["debias"] or parts["positions"]:
        out += ["", "## Position bias (round 1)", ""] + [f"- {line}" for line in parts["debias"] + parts["positions"]]
    out += ["", "## Abstentions and counts", ""] + [f"- {line}" for line in parts["conventions"]]
    if parts["conformity"]:
        out += ["", "## Conformity", ""] + [f"- {line}" for line in parts["conformity"]]
    if parts["independence"]:
        out += ["", "## Independence of the seats", ""] + [f"- {line}" for line in parts["independence"]]
    return "\n".join(out) + "\n"


def accuracy_chart(r: Report) -> str:
    """Accuracy by round: the majority and the mean seat, one line each, with a point per round."""
    width, height, left, right, top, bottom = 560, 220, 44, 120, 14, 34
    pw, ph = width - left - right, height - top - bottom
    step = pw / max(1, r.rounds - 1)
    x = lambda k: left + (k * step if r.rounds > 1 else pw / 2)  # noqa: E731
    y = lambda v: top + ph * (1 - v)  # noqa: E731
    body = []
    for v in (0, 0.25, 0.5, 0.75, 1.0):
        body.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="currentColor" stroke-opacity="0.15"/>')
        body.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" fill-opacity="0.7">{int(v * 100)}%</text>')
    for k in range(r.rounds):
        body.append(f'<text x="{x(k):.1f}" y="{height - 12}" text-anchor="middle" fill-opacity="0.7">Round {k + 1}</text>')
    for (label, ests), color in zip([("majority", r.by_round["majority"]), ("mean seat", r.by_round["single"])], PALETTE):
        pts = [(x(k), y(e.value)) for k, e in enumerate(ests) if not math.isnan(e.value)]
        if not pts:
            continue
        body.append(f'<polyline class="series" points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in pts)}" fill="none" stroke="{color}" stroke-width="3"/>')
        for (a, b), e in zip(pts, ests):
            body.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="4.5" fill="{color}"><title>{label}: {100 * e.value:.1f}% ± {se(e)}</title></circle>')
        body.append(f'<text x="{left + pw + 10}" y="{pts[-1][1] + 4:.1f}" fill="{color}" font-weight="600">{label}</text>')
    return svg(width, height, "accuracy", "Accuracy by round", body)


def page(r: Report) -> str:
    e = html.escape
    body = markdown(r)
    table = [line for line in body.splitlines() if line.startswith("|")]
    parts = ["<!doctype html><html lang=en><meta charset=utf-8>", f"<title>localpanel eval: {e(r.name)}</title>",
             "<style>:root{color-scheme:light dark}body{font:16px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;"
             "padding:0 1rem}td,th{padding:.3rem .7rem;border-bottom:1px solid #8884;text-align:right}td:first-child,th:first-child"
             "{text-align:left}table{border-collapse:collapse}svg.chart{display:block;max-width:100%;height:auto}</style><body>",
             f"<h1>localpanel eval: {e(r.name)}</h1>",
             f"<p>{r.questions} questions from <code>{e(r.source)}</code> (sha256 <code>{e(r.sha256[:16])}…</code>), "
             f"{len(r.participants)} seats, {r.rounds} rounds, {r.compute_seconds:.0f} s in the turns</p>"]

    def html_table(lines: list[str]) -> str:
        rows_ = [[c.strip() for c in line.strip("|").split("|")] for line in lines if not set(line) <= set("|-: ")]
        head, rest = rows_[0], rows_[1:]
        return ("<table><tr>" + "".join(f"<th>{e(c)}" for c in head) + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{e(c)}" for c in row) + "</tr>" for row in rest) + "</table>")

    n_modes = len(r.modes) + 2
    parts.append(html_table(table[:n_modes]))
    lines = _lines(r)
    parts += [f"<p>{e(x)}</p>" for x in lines["diff"]]
    if lines["best"]:
        parts.append("<h2>Against the best seat</h2>" + "".join(f"<p>{e(x)}</p>" for x in lines["best"]))
    for key, title in (("open", "Open questions"), ("sc", "Against the strongest model's own samples"),
                       ("seats", "What each seat adds")):
        if lines[key]:
            parts.append(f"<h2>{title}</h2>" + "".join(f"<p>{e(x)}</p>" for x in lines[key]))
    if lines["views"]:
        parts.append("<h2>Drawn votes and views</h2>" + "".join(f"<p>{e(x)}</p>" for x in lines["views"]))
    if lines["debias"] or lines["positions"]:
        parts.append("<h2>Position bias (round 1)</h2>" + "".join(f"<p>{e(x)}</p>" for x in lines["debias"] + lines["positions"]))
    parts.append("<h2>Abstentions and counts</h2><ul>" + "".join(f"<li>{e(x)}</li>" for x in lines["conventions"]) + "</ul>")
    parts += ["<h2>Accuracy by round</h2>", accuracy_chart(r), html_table(table[n_modes:])]
    if lines["conformity"]:
        parts += ["<h2>Conformity</h2><ul>"] + [f"<li>{e(x)}" for x in lines["conformity"]] + ["</ul>"]
    if lines["independence"]:
        parts += ["<h2>Independence of the seats</h2><ul>"] + [f"<li>{e(x)}" for x in lines["independence"]] + ["</ul>"]
    parts.append("</body></html>\n")
    return "\n".join(parts)
