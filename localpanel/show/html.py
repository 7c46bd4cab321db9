"""The HTML writer: a self-contained page (no scripts, no external assets). Every string a card holds is escaped in
one place (``escaped(section, html.escape)``); the charts escape their own labels."""

from __future__ import annotations

import html

from localpanel.show import card as c
from localpanel.show.charts import option_colors, paths_chart, persuasion_chart, probability_bar, votes_chart

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


def write(card: c.Card) -> str:
    t = card.transcript
    colors = option_colors(list(card.options))
    raw_options = list(card.options)
    parts = ["<!doctype html><html lang=en><meta charset=utf-8><link rel=icon href=\"data:,\">",
             f"<title>{html.escape(t.question[:80])}</title><style>{_CSS}</style><body>"]
    for raw, s in ((x, c.escaped(x, html.escape)) for x in card.sections):
        match s:
            case c.Header():
                parts.append(f"<p class=meta>{s.title}</p><h1>{s.question}</h1>")
            case c.Documents():
                parts.append("<p class=p>Documents read before the question:</p><ul>"
                             + "".join(f"<li>{c.Documents.line(d)}</li>" for d in s.items) + "</ul>")
            case c.Result():
                parts.append(f"<p class=result>Result: {s.line}</p>")
                parts += [f"<p class=margin>{n}</p>" for n in s.notes]
                if s.warning:
                    parts.append(f"<p class=drawn>{s.warning}</p>")
            case c.CouncilAnswer():
                parts.append(f"<h2>The council's answer</h2><ul><li><b>Answer:</b> {s.answer_line()}")
                parts += [f"<li><b>{label}</b> — {p.candidate} ({', '.join(p.seats)}): {p.text}" for label, p in s.parts()]
                parts.append("</ul>")
            case c.Options():
                parts.append("<table><tr><th>Option<th>Votes<th><th>Model's own probability</tr>")
                for r, o in zip(s.rows, raw_options):
                    parts.append(f"<tr><td>{r.option}<td>{r.votes}<td><span class=bar style='width:{round(200 * r.share)}px;"
                                 f"background:{colors[o]}'></span><td>{100 * r.probability:.0f}%</tr>")
                parts.append("</table>")
                if s.abstentions:
                    parts.append(f"<p>{s.abstentions} abstained: their ballot failed.</p>")
                parts.append("<p class=legend>" + "".join(
                    f"<span><i style='background:{colors[o]}'></i>{html.escape(o)}</span>" for o in raw_options) + "</p>")
            case c.Proposals():
                parts.append("<h2>Proposals</h2><table><tr><th>Candidate<th>Proposed by</tr>")
                parts += [f"<tr><td>{row.candidate}<td>" + "; ".join(f"{seat}: {text}" for seat, text in row.by) + "</tr>"
                          for row in s.rows]
                parts.append("</table>")
                if s.failed:
                    parts.append(f"<p>No proposal from {', '.join(s.failed)}: it failed.</p>")
                parts.append(f"<p class=p>Merge rule: {s.rule}.</p>")
            case c.Notes():
                parts.append(f"<h2>{s.short_heading or s.heading}</h2>" + "".join(f"<p>{x}</p>" for x in s.lines))
            case c.Summary():
                parts.append("<h2>Summary</h2>")
                parts += [f"<p>{'<b>' + h + ':</b> ' if h else ''}{text}</p>" for h, text in s.parts]
            case c.Arguments():
                parts.append("<h2>Strongest arguments</h2>")
                parts += [f"<p><b>{option}</b> — {a.participant}, round {a.round}<blockquote>{a.text}</blockquote>"
                          for option, a in s.items]
            case c.ModeratorFailure():
                parts.append(f"<p class=abstain>Moderator: no report ({s.reason})</p>")
            case c.VoteMatrix():
                parts.append("<h2>Votes over the rounds</h2>" + votes_chart(t))
                parts.append("<h2>Vote matrix</h2><table><tr><th>Participant" + "".join(f"<th>Round {r}" for r in s.rounds) + "</tr>")
                parts += [f"<tr><td>{name}" + "".join(f"<td>{v or '—'}" for v in votes) + "</tr>" for name, votes in s.rows]
                parts.append("</table>")
            case c.TurningPoints():
                parts.append("<h2>Turning points</h2><p class=p>Changes of a seat's most probable option.</p>")
                if not s.points:
                    parts.append("<p>Nobody changed their mind.</p>")
                for p in s.points:
                    who = f", persuaded by {p.attributed_to}" if p.attributed_to else ""
                    parts.append(f"<p>Round {p.round}: <b>{p.participant}</b> {p.from_vote} → {p.to_vote}{who}"
                                 f"<blockquote>{p.rationale or ''}</blockquote>")
            case c.Persuasion():
                parts.append("<h2>Who moved whom</h2>" + persuasion_chart(t))
                if s.most_persuasive:
                    parts.append(f"<p>Most persuasive: <b>{s.most_persuasive}</b></p>")
            case c.Paths():
                parts.append("<h2>Each seat's probability for the option it ended on</h2>" + paths_chart(t))
                parts += [f"<p>{x}</p>" for x in s.shifts]
            case c.Ballots():
                parts.append(f"<h2>{'Round ' + str(s.number) if s.number is not None else 'Votes'}</h2>")
                for b, b_raw in zip(s.ballots, raw.ballots):
                    head = f"<b>{b.participant}</b> <span class=p>{b.model}</span>"
                    if not b.valid:
                        parts.append(f"<div class='turn abstain'>{head}<p>Abstained: {b.failure}</p></div>")
                        continue
                    conf = (f"{probability_bar(b_raw.probabilities, raw_options)} <span class=p>p: {b.confidence}</span>"
                            if b.confidence else "")
                    parts.append(f"<div class=turn>{head}<div class=vote>Vote: {b.vote}{b.drawn}{conf}</div>"
                                 + (f"<div class=p>Persuaded by {b.attributed_to}</div>" if b.attributed_to else "")
                                 + f"<p>{b.rationale}</p>"
                                 + (f"<p class=copied>{b.copied}</p>" if b.copied else "") + "</div>")
            case c.Footer():
                parts.append(f"<p class=meta>{s.text}</p></body></html>\n")
    return "\n".join(parts)
