"""The render stage: a transcript as a terminal card, Markdown, a self-contained HTML page, or JSON."""

from __future__ import annotations

import html
import re
import textwrap

from localpanel.panel.copying import COPIED_WORDS, copy_line
from localpanel.panel.moderator import facts
from localpanel.panel.counts import rankings_lines, weighted_line
from localpanel.panel.tally import margin_line, position_line, shift_line, shift_sentence
from localpanel.runs.transcript import Round, Transcript
from localpanel.show.charts import option_colors, paths_chart, persuasion_chart, probability_bar, votes_chart

FORMATS = ("text", "markdown", "html", "json")


def render(t: Transcript, fmt: str = "text", *, color: bool = False, width: int = 88) -> str:
    if fmt == "json":
        return t.model_dump_json(indent=2) + "\n"
    if fmt == "markdown":
        return markdown(t)
    if fmt == "html":
        return page(t)
    return card(t, color=color, width=width)


def _bar(share: float, width: int = 20) -> str:
    full = round(share * width)
    return "█" * full + "·" * (width - full)


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _title(t: Transcript) -> str:
    what = "Poll" if t.kind == "poll" else "Debate"
    return f"localpanel {what} · {len(t.participants)} participants · panel {t.panel} · seed {t.settings.seed}"


def _final(t: Transcript) -> Round | None:
    return t.rounds[-1] if t.rounds else None


def _confidence(turn) -> str:
    return " · ".join(f"{o} {p:.2f}" for o, p in sorted(turn.confidence.items(), key=lambda kv: -kv[1]))


def _model_of(t: Transcript) -> dict[str, str]:
    return {p.name: p.model for p in t.participants}


def _margin(t: Transcript) -> str | None:
    final = _final(t)
    return margin_line(final.tally) if final else None


def _weighted(t: Transcript) -> str | None:
    final = _final(t)
    return weighted_line(t.weighted_count, final.tally) if t.weighted_count and final else None


def _how_voted(t: Transcript) -> str:
    """What a vote is, said on the card when it is not the seat's most probable option."""
    if not t.settings.vote_draw:
        return ""
    return ("Votes were drawn from each seat's probabilities at its temperature (--vote-draw), so a vote may go "
            "against the seat's most probable option; turning points count only changes of that option.")


def _drawn_note(turn) -> str:
    """' (drawn; most probable: SQLite)' for a ballot whose drawn vote is not its seat's view."""
    view = turn.view
    return f" (drawn; most probable: {view})" if turn.valid and view is not None and view != turn.vote else ""


def _rankings_shown(t: Transcript) -> bool:
    """Borda and Condorcet on the card from three options on (with two they repeat the count; the JSON has them)."""
    return t.rankings is not None and len(t.options) > 2


def _copies(t: Transcript) -> dict[tuple[str, int], object]:
    """The copied rationales, by (participant, round)."""
    return {(c.participant, c.round): c for c in t.copying if c.copied}


def _copying_lines(t: Transcript) -> list[str]:
    """Per round after the first: how many rationales share COPIED_WORDS or more words in a row with earlier text."""
    lines = []
    if t.settings.copy_guard:
        unit = "tokens (the guard of an earlier localpanel)" if t.settings.copy_guard_by == "tokens" else "words"
        lines.append(f"Copy guard on: no rationale after round 1 could copy {t.settings.copy_guard} {unit} in a row from "
                     f"earlier rationales or its prompt's instructions (--copy-guard {t.settings.copy_guard}).")
    for r in sorted({c.round for c in t.copying}):
        rs = [c for c in t.copying if c.round == r]
        n = sum(c.copied for c in rs)
        lines.append(f"Round {r}: {n} of {len(rs)} rationales share {COPIED_WORDS} or more words in a row with text their "
                     f"seat had read (longest {max(c.words for c in rs)}; 12 or more: {sum(c.words >= 12 for c in rs)}).")
    return lines


def _path(t: Transcript, name: str) -> str:
    path = t.probability_paths[name]
    return f"{path.option} " + " → ".join("—" if p is None else f"{p:.2f}" for p in path.probabilities)


def card(t: Transcript, *, color: bool = False, width: int = 88) -> str:
    """The terminal result card."""

    def style(text: str, **kw) -> str:
        if not color:
            return text
        import click

        return click.style(text, **kw)

    def wrap(text: str, indent: str = "    ") -> str:
        return textwrap.fill(text, width=width, initial_indent=indent, subsequent_indent=indent)

    out: list[str] = [style(_title(t), dim=True), style(t.question, bold=True), ""]
    out.append("Result: " + style(t.result.line, bold=True, fg="green" if t.result.consensus else "yellow"))
    if margin := _margin(t):
        out.append(wrap(margin, ""))
    if weighted := _weighted(t):
        out.append(wrap(weighted, ""))
    if how := _how_voted(t):
        out.append(style(wrap(how, ""), fg="yellow"))
    final = _final(t)
    if final:
        out += ["", "Options" + " " * 22 + "votes   model's own probability (mean)"]
        name_w = max((len(o) for o in t.options), default=6)
        for o in t.options:
            share = final.tally.shares[o]
            out.append(f"  {o:<{name_w}}  {_bar(share)}  {final.tally.counts[o]:>3}    {_pct(final.tally.weighted[o])}")
        if final.tally.abstentions:
            out.append(f"  ({final.tally.abstentions} abstained: their ballot failed)")
    if _rankings_shown(t) and final:
        out += ["", "Rankings from the probabilities (each ballot ranks every option by its own probabilities)"]
        out += [wrap(line, "  ") for line in rankings_lines(t.rankings, final.tally)]
    if t.positions:
        out += ["", "Position effect", wrap(position_line(t.positions), "  "), wrap(shift_line(t.positions, t.options), "  ")]
    if final:
        out += ["", "Votes" + (f" (round {final.number})" if t.kind == "debate" else "")]
        models, copies = _model_of(t), _copies(t)
        for turn in final.turns:
            out.append("  " + style(turn.participant, bold=True) + style(f" · {models[turn.participant]}", dim=True))
            if turn.valid:
                extra = f"   (p: {_confidence(turn)})" if turn.confidence else ""
                out.append(f"    Vote: {style(turn.vote, bold=True)}{_drawn_note(turn)}{extra}")
                if turn.attributed_to:
                    out.append(f"    Persuaded by: {turn.attributed_to}")
                out.append(wrap(turn.rationale or ""))
                if (c := copies.get((turn.participant, turn.round))) is not None:
                    out.append(style(wrap(copy_line(c)), fg="yellow"))
            else:
                out.append(style(f"    Abstained: {turn.failure}", fg="red"))
    if t.kind == "debate":
        out += ["", "Vote matrix"]
        name_w = max(len(p) for p in t.vote_matrix)
        col = min(max([3, *(len(o) for o in t.options)]), 16)
        out.append("  " + " " * name_w + "  " + "  ".join(f"{'R' + str(r.number):<{col}}" for r in t.rounds))
        for name, votes in t.vote_matrix.items():
            out.append("  " + f"{name:<{name_w}}  " + "  ".join(f"{(v or '—')[:col]:<{col}}" for v in votes))
        out += ["", "Turning points (changes of a seat's most probable option)"]
        if not t.turning_points:
            out.append("  None: nobody changed their mind.")
        for p in t.turning_points:
            who = f" (persuaded by {p.attributed_to})" if p.attributed_to else ""
            out.append(f"  Round {p.round}: {p.participant} {p.from_vote} → {p.to_vote}{who}")
            if p.rationale:
                out.append(wrap(f"“{p.rationale}”", "      "))
        if t.persuasion:
            out += ["", "Who moved whom"]
            out += [f"  {e.source} → {e.target}" + (f" ×{e.count}" if e.count > 1 else "") for e in t.persuasion]
            if t.most_persuasive:
                out.append(f"  Most persuasive: {t.most_persuasive}")
        if t.copying:
            out += ["", "Copying (what a round adds: a rationale's longest run of words shared with text its seat had read)"]
            out += [wrap(line, "  ") for line in _copying_lines(t)]
        if t.probability_paths:
            out += ["", "Each seat's probability for the option it ended on, round by round"]
            name_w = max(len(n) for n in t.probability_paths)
            out += [f"  {name:<{name_w}}  {_path(t, name)}" for name in t.probability_paths]
            out += [wrap(shift_sentence(x), "  ") for x in t.shifts]
    if summary := summary_parts(t):
        out += ["", "Summary"]
        for heading, text in summary:
            out += [f"  {heading}:", wrap(text)] if heading else [wrap(text, "  ")]
    if t.strongest_arguments:
        out += ["", "Strongest arguments (picked by the moderator among the rationales given)"]
        for option, arg in t.strongest_arguments.items():
            out.append(f"  {style(option, bold=True)} — {arg.participant}, round {arg.round}:")
            out.append(wrap(f"“{arg.text}”"))
    elif t.moderator and t.moderator.failure:
        out += ["", style(f"Moderator: no report ({t.moderator.failure})", fg="red")]
    out += ["", style(_footer(t), dim=True)]
    return "\n".join(line.rstrip() for line in out) + "\n"


def summary_parts(t: Transcript) -> list[tuple[str | None, str]]:
    """The summary as (heading, text): localpanel's facts first, then the case made for each option."""
    report = t.moderator
    if report is None or not report.facts:
        return [(None, t.summary)] if t.summary else []
    # The facts read again from the ballots, as the card's turning points are: a run saved before votes were views
    # kept facts that named other changes.
    names = [p.name for p in t.participants]
    parts: list[tuple[str | None, str]] = [(None, facts(t.options, names, [r.turns for r in t.rounds]))]
    for p in report.passages:
        if p.failure or not p.text:
            continue
        if p.by_model:
            parts.append((f"The case for {p.option} (the moderator, from {len(p.arguments)} rationales)", p.text))
        elif p.strongest is not None:
            parts.append((f"The case for {p.option}", f"argued by {p.strongest.participant} alone (quoted below)."))
    return parts


def summary_text(t: Transcript) -> str | None:
    """The summary as one paragraph, as the card gives it (what the page's snapshot and MCP show)."""
    parts = summary_parts(t)
    return " ".join(f"{h}: {text}" if h else text for h, text in parts) if parts else None


def _footer(t: Transcript) -> str:
    per_round = " + ".join(f"{sum(x.seconds for x in r.turns):.1f}" for r in t.rounds)
    stop = {"consensus": "consensus", "stable": "no vote changed", "max_rounds": "last round"}[t.stopped_because]
    rounds = f"rounds {per_round} s · stopped: {stop} · " if t.kind == "debate" else ""
    return f"run {t.id} · {t.seconds:.1f} s · {rounds}again: localpanel show {t.id}"


def markdown(t: Transcript) -> str:
    out = [f"# {md_text(t.question)}", "", f"*{md_text(_title(t))}*", "", f"**Result: {md_text(t.result.line)}**", ""]
    if margin := _margin(t):
        out += [md_text(margin), ""]
    if weighted := _weighted(t):
        out += [md_text(weighted), ""]
    if how := _how_voted(t):
        out += [f"*{md_text(how)}*", ""]
    final = _final(t)
    if final:
        out += ["| Option | Votes | Share | Model's own probability |", "|---|---:|---:|---:|"]
        out += [
            f"| {md_text(o)} | {final.tally.counts[o]} | {_pct(final.tally.shares[o])} | {_pct(final.tally.weighted[o])} |"
            for o in t.options
        ]
        out.append("")
    if _rankings_shown(t) and final:
        out += ["## Rankings from the probabilities", ""] + [f"- {md_text(line)}" for line in rankings_lines(t.rankings, final.tally)] + [""]
    if t.positions:
        out += ["## Position effect", "", md_text(position_line(t.positions)), "", md_text(shift_line(t.positions, t.options)), ""]
    if summary := summary_parts(t):
        out += ["## Summary", ""]
        out += [(f"**{md_text(h)}:** " if h else "") + md_text(text) + "\n" for h, text in summary]
    if t.strongest_arguments:
        out += ["## Strongest arguments", ""]
        out += [f"- **{md_text(o)}** — {md_text(a.participant)}, round {a.round}: “{md_text(a.text)}”" for o, a in t.strongest_arguments.items()]
        out.append("")
    if t.kind == "debate":
        out += ["## Vote matrix", "", "| Participant | " + " | ".join(f"Round {r.number}" for r in t.rounds) + " |"]
        out.append("|---|" + "---|" * len(t.rounds))
        out += [f"| {md_text(n)} | " + " | ".join(md_text(v or "—") for v in votes) + " |" for n, votes in t.vote_matrix.items()]
        out += ["", "## Turning points", "", "Changes of a seat's most probable option.", ""]
        if not t.turning_points:
            out.append("Nobody changed their mind.")
        for p in t.turning_points:
            who = f", persuaded by {md_text(p.attributed_to)}" if p.attributed_to else ""
            out.append(f"- Round {p.round}: **{md_text(p.participant)}** {md_text(p.from_vote)} → {md_text(p.to_vote)}{who}: “{md_text(p.rationale or '')}”")
        if t.most_persuasive:
            out += ["", f"Most persuasive: **{md_text(t.most_persuasive)}**"]
        if t.probability_paths:
            out += ["", "## Probability paths", "", "Each seat's probability for the option it ended on.", "",
                    "| Participant | Option | " + " | ".join(f"Round {r.number}" for r in t.rounds) + " |",
                    "|---|---|" + "---:|" * len(t.rounds)]
            for name, path in t.probability_paths.items():
                cells = ["—" if p is None else f"{p:.2f}" for p in path.probabilities]
                out.append(f"| {md_text(name)} | {md_text(path.option)} | " + " | ".join(cells) + " |")
            out += [""] + [f"- {md_text(shift_sentence(x))}" for x in t.shifts]
        if t.copying:
            out += ["", "## Copying", ""] + [f"- {md_text(line)}" for line in _copying_lines(t)]
        out.append("")
    for r in t.rounds:
        out += [f"## Round {r.number}" if t.kind == "debate" else "## Votes", ""]
        for turn in r.turns:
            head = f"### {md_text(turn.participant)} ({md_text(_model_of(t)[turn.participant])})"
            if turn.valid:
                conf = f" — p: {md_text(_confidence(turn))}" if turn.confidence else ""
                persuaded = f" — persuaded by {md_text(turn.attributed_to)}" if turn.attributed_to else ""
                out += [head, "", f"**Vote: {md_text(turn.vote)}**{md_text(_drawn_note(turn))}{conf}{persuaded}", "", md_text(turn.rationale or ""), ""]
                if (c := _copies(t).get((turn.participant, turn.round))) is not None:
                    out += [f"*{md_text(copy_line(c))}*", ""]
            else:
                out += [head, "", f"*Abstained: {md_text(turn.failure or '')}*", ""]
    out.append(f"---\n{md_text(_footer(t))}")
    return "\n".join(out) + "\n"


# What a Markdown renderer would read as markup: emphasis, code, links and images (which it fetches), raw HTML
# (which it may run), tables. Model-written text and user input have every such character backslash-escaped.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>!|~#&])")


def md_text(text: str) -> str:
    """Text as Markdown shows it literally: no link, image, HTML tag or emphasis it could smuggle in."""
    return _MD_SPECIAL.sub(r"\\\1", text)


_CSS = """
:root{color-scheme:light dark}
body{font:16px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#222;background:#fff}
h1{font-size:1.4rem}.meta{color:#777}.result{font-size:1.2rem;font-weight:600;margin:1rem 0}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:.3rem .7rem;border-bottom:1px solid #ddd;text-align:left}
.bar{display:inline-block;height:.7rem;background:#4a7;border-radius:2px}.turn{margin:1rem 0;padding:.5rem 1rem;border-left:3px solid #4a7}
.abstain{border-color:#c44}.copied{color:#b36b00;font-size:.9rem}.vote{font-weight:600}.p{color:#777;font-size:.9rem}blockquote{margin:.3rem 0 .3rem 1rem;color:#444}
svg.chart{display:block;max-width:100%;height:auto;margin:.5rem 0 1rem}svg.pbar{vertical-align:middle;margin-left:.6rem;border-radius:2px}
.legend span{display:inline-block;margin-right:1rem;font-size:.9rem}.legend i{display:inline-block;width:.8rem;height:.8rem;border-radius:2px;margin-right:.3rem;vertical-align:-1px}
@media (prefers-color-scheme:dark){body{color:#e6e6e6;background:#15171b}td,th{border-color:#333}blockquote{color:#c8c8c8}.meta,.p{color:#9a9a9a}}
"""


def page(t: Transcript) -> str:
    """A self-contained HTML page (no scripts, no external assets); all text escaped."""
    e = html.escape
    parts = [
        "<!doctype html><html lang=en><meta charset=utf-8><link rel=icon href=\"data:,\">",
        f"<title>{e(t.question[:80])}</title><style>{_CSS}</style><body>",
        f"<p class=meta>{e(_title(t))}</p><h1>{e(t.question)}</h1><p class=result>Result: {e(t.result.line)}</p>",
    ]
    if margin := _margin(t):
        parts.append(f"<p class=margin>{e(margin)}</p>")
    if weighted := _weighted(t):
        parts.append(f"<p class=margin>{e(weighted)}</p>")
    if how := _how_voted(t):
        parts.append(f"<p class=drawn>{e(how)}</p>")
    final = _final(t)
    if final:
        colors = option_colors(t.options)
        parts.append("<table><tr><th>Option<th>Votes<th><th>Model's own probability</tr>")
        for o in t.options:
            w = round(200 * final.tally.shares[o])
            parts.append(
                f"<tr><td>{e(o)}<td>{final.tally.counts[o]}<td><span class=bar style='width:{w}px;background:{colors[o]}'></span>"
                f"<td>{_pct(final.tally.weighted[o])}</tr>"
            )
        parts.append("</table>")
        parts.append("<p class=legend>" + "".join(f"<span><i style='background:{colors[o]}'></i>{e(o)}</span>" for o in t.options) + "</p>")
    if _rankings_shown(t) and final:
        parts.append("<h2>Rankings from the probabilities</h2>" + "".join(f"<p>{e(x)}</p>" for x in rankings_lines(t.rankings, final.tally)))
    if t.positions:
        parts.append(f"<h2>Position effect</h2><p>{e(position_line(t.positions))}</p><p>{e(shift_line(t.positions, t.options))}</p>")
    if t.kind == "debate" and t.rounds:
        parts.append("<h2>Votes over the rounds</h2>" + votes_chart(t))
        parts.append("<h2>Who moved whom</h2>" + persuasion_chart(t))
        if t.probability_paths:
            parts.append("<h2>Each seat's probability for the option it ended on</h2>" + paths_chart(t))
            parts += [f"<p>{e(shift_sentence(x))}</p>" for x in t.shifts]
        if t.copying:
            parts.append("<h2>Copying</h2>" + "".join(f"<p>{e(x)}</p>" for x in _copying_lines(t)))
    if summary := summary_parts(t):
        parts.append("<h2>Summary</h2>")
        parts += [f"<p>{'<b>' + e(h) + ':</b> ' if h else ''}{e(text)}</p>" for h, text in summary]
    if t.strongest_arguments:
        parts.append("<h2>Strongest arguments</h2>")
        for o, a in t.strongest_arguments.items():
            parts.append(f"<p><b>{e(o)}</b> — {e(a.participant)}, round {a.round}<blockquote>{e(a.text)}</blockquote>")
    if t.kind == "debate":
        parts.append("<h2>Vote matrix</h2><table><tr><th>Participant" + "".join(f"<th>Round {r.number}" for r in t.rounds) + "</tr>")
        for name, votes in t.vote_matrix.items():
            parts.append(f"<tr><td>{e(name)}" + "".join(f"<td>{e(v or '—')}" for v in votes) + "</tr>")
        parts.append("</table><h2>Turning points</h2><p class=p>Changes of a seat's most probable option.</p>")
        if not t.turning_points:
            parts.append("<p>Nobody changed their mind.</p>")
        for p in t.turning_points:
            who = f", persuaded by {e(p.attributed_to)}" if p.attributed_to else ""
            parts.append(
                f"<p>Round {p.round}: <b>{e(p.participant)}</b> {e(p.from_vote)} → {e(p.to_vote)}{who}"
                f"<blockquote>{e(p.rationale or '')}</blockquote>"
            )
        if t.most_persuasive:
            parts.append(f"<p>Most persuasive: <b>{e(t.most_persuasive)}</b></p>")
    models = _model_of(t)
    for r in t.rounds:
        parts.append(f"<h2>{'Round ' + str(r.number) if t.kind == 'debate' else 'Votes'}</h2>")
        for turn in r.turns:
            head = f"<b>{e(turn.participant)}</b> <span class=p>{e(models[turn.participant])}</span>"
            if turn.valid:
                conf = f"{probability_bar(turn.confidence, t.options)} <span class=p>p: {e(_confidence(turn))}</span>" if turn.confidence else ""
                parts.append(
                    f"<div class=turn>{head}<div class=vote>Vote: {e(turn.vote)}{e(_drawn_note(turn))}{conf}</div>"
                    + (f"<div class=p>Persuaded by {e(turn.attributed_to)}</div>" if turn.attributed_to else "")
                    + f"<p>{e(turn.rationale or '')}</p>"
                    + (f"<p class=copied>{e(copy_line(c))}</p>" if (c := _copies(t).get((turn.participant, turn.round))) else "")
                    + "</div>"
                )
            else:
                parts.append(f"<div class='turn abstain'>{head}<p>Abstained: {e(turn.failure or '')}</p></div>")
    parts.append(f"<p class=meta>{e(_footer(t))}</p></body></html>\n")
    return "\n".join(parts)
