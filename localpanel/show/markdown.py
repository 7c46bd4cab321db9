"""The Markdown writer. Every string a card holds is escaped in one place (``escaped(section, md_text)``), so a
question, an option or a rationale cannot smuggle in a link, an image, raw HTML or a table cell."""

from __future__ import annotations

import re

from localpanel.show import card as c

# What a Markdown renderer would read as markup: emphasis, code, links and images (which it fetches), raw HTML
# (which it may run), tables. Model-written text and user input have every such character backslash-escaped.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>!|~#&])")


def md_text(text: str) -> str:
    """Text as Markdown shows it literally: no link, image, HTML tag or emphasis it could smuggle in."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def _rounds_head(first: list[str], rounds: tuple[int, ...], align: str) -> list[str]:
    return ["| " + " | ".join(first + [f"Round {r}" for r in rounds]) + " |", "|" + "---|" * len(first) + align * len(rounds)]


def write(card: c.Card) -> str:
    out: list[str] = []
    for s in (c.escaped(x, md_text) for x in card.sections):
        match s:
            case c.Header():
                out += [f"# {s.question}", "", f"*{s.title}*", ""]
            case c.Documents():
                out += ["Documents read before the question:", ""] + [f"- {c.Documents.line(d)}" for d in s.items] + [""]
            case c.Result():
                out += [f"**Result: {s.line}**", ""]
                for n in s.notes:
                    out += [n, ""]
                if s.warning:
                    out += [f"*{s.warning}*", ""]
            case c.CouncilAnswer():
                out += ["## The council's answer", "", f"- **Answer:** {s.answer_line()}"]
                out += [f"- **{label}** — {p.candidate} ({', '.join(p.seats)}): {p.text}" for label, p in s.parts()] + [""]
            case c.Options():
                out += ["| Option | Votes | Share | Model's own probability |", "|---|---:|---:|---:|"]
                out += [f"| {r.option} | {r.votes} | {100 * r.share:.0f}% | {100 * r.probability:.0f}% |" for r in s.rows]
                if s.abstentions:
                    out.append(f"\n{s.abstentions} abstained: their ballot failed.")
                out.append("")
            case c.Proposals():
                out += ["## Proposals", "", "| Candidate | Proposed by |", "|---|---|"]
                out += [f"| {row.candidate} | " + "; ".join(f"{seat}: {text}" for seat, text in row.by) + " |" for row in s.rows]
                if s.failed:
                    out.append(f"\nNo proposal from {', '.join(s.failed)}: it failed.")
                out += ["", f"Merge rule: {s.rule}.", ""]
            case c.Notes():
                out += [f"## {s.short_heading or s.heading}", ""] + [f"- {line}" for line in s.lines] + [""]
            case c.Summary():
                out += ["## Summary", ""] + [(f"**{h}:** " if h else "") + text + "\n" for h, text in s.parts]
            case c.Arguments():
                out += ["## Strongest arguments", ""]
                out += [f"- **{option}** — {a.participant}, round {a.round}: “{a.text}”" for option, a in s.items] + [""]
            case c.ModeratorFailure():
                out += [f"*Moderator: no report ({s.reason})*", ""]
            case c.VoteMatrix():
                out += ["## Vote matrix", ""] + _rounds_head(["Participant"], s.rounds, "---|")
                out += [f"| {name} | " + " | ".join(v or "—" for v in votes) + " |" for name, votes in s.rows] + [""]
            case c.TurningPoints():
                out += ["## Turning points", "", "Changes of a seat's most probable option.", ""]
                if not s.points:
                    out.append("Nobody changed their mind.")
                for p in s.points:
                    who = f", persuaded by {p.attributed_to}" if p.attributed_to else ""
                    out.append(f"- Round {p.round}: **{p.participant}** {p.from_vote} → {p.to_vote}{who}: “{p.rationale or ''}”")
                out.append("")
            case c.Persuasion():
                if s.edges:
                    out += ["## Who moved whom", ""]
                    out += [f"- {e.source} → {e.target}" + (f" ×{e.count}" if e.count > 1 else "") for e in s.edges]
                    out.append("")
                if s.most_persuasive:
                    out += [f"Most persuasive: **{s.most_persuasive}**", ""]
            case c.Paths():
                out += ["## Probability paths", "", "Each seat's probability for the option it ended on.", ""]
                out += _rounds_head(["Participant", "Option"], s.rounds, "---:|")
                for r in s.rows:
                    cells = ["—" if p is None else f"{p:.2f}" for p in r.probabilities]
                    out.append(f"| {r.participant} | {r.option} | " + " | ".join(cells) + " |")
                out += [""] + [f"- {x}" for x in s.shifts] + [""]
            case c.Ballots():
                out += [f"## Round {s.number}" if s.number is not None else "## Votes", ""]
                for b in s.ballots:
                    head = f"### {b.participant} ({b.model})"
                    if not b.valid:
                        out += [head, "", f"*Abstained: {b.failure}*", ""]
                        continue
                    conf = f" — p: {b.confidence}" if b.confidence else ""
                    persuaded = f" — persuaded by {b.attributed_to}" if b.attributed_to else ""
                    out += [head, "", f"**Vote: {b.vote}**{b.drawn}{conf}{persuaded}", "", b.rationale, ""]
                    if b.copied:
                        out += [f"*{b.copied}*", ""]
            case c.Footer():
                out.append(f"---\n{s.text}")
    return "\n".join(out) + "\n"
