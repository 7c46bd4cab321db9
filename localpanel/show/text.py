"""The terminal writer: a card as plain text, coloured when the terminal takes it."""

from __future__ import annotations

import textwrap

from localpanel.show import card as c


def write(card: c.Card, *, color: bool = False, width: int = 88) -> str:
    def style(text: str, **kw) -> str:
        if not color:
            return text
        import click

        return click.style(text, **kw)

    def wrap(text: str, indent: str = "    ") -> str:
        return textwrap.fill(text, width=width, initial_indent=indent, subsequent_indent=indent)

    out: list[str] = []
    for s in card.sections:
        match s:
            case c.Header():
                out += [style(s.title, dim=True), style(s.question, bold=True), ""]
            case c.Documents():
                out += ["Documents read before the question"] + [wrap(c.Documents.line(d), "  ") for d in s.items] + [""]
            case c.Result():
                out.append("Result: " + style(s.line, bold=True, fg="green" if s.consensus else "yellow"))
                out += [wrap(n, "") for n in s.notes]
                if s.warning:
                    out.append(style(wrap(s.warning, ""), fg="yellow"))
            case c.CouncilAnswer():
                out += ["", "The council's answer (each part cites the seats it comes from)", f"  Answer: {s.answer_line()}"]
                for label, p in s.parts():
                    out += [f"  {label} — {p.candidate} ({', '.join(p.seats)}):", wrap(p.text)]
            case c.Options():
                out += ["", "Options" + " " * 22 + "votes   model's own probability (mean)"]
                name_w = max((len(r.option) for r in s.rows), default=6)
                for r in s.rows:
                    full = round(r.share * 20)
                    bar = "█" * full + "·" * (20 - full)
                    out.append(f"  {r.option:<{name_w}}  {bar}  {r.votes:>3}    {100 * r.probability:.0f}%")
                if s.abstentions:
                    out.append(f"  ({s.abstentions} abstained: their ballot failed)")
            case c.Proposals():
                out += ["", "Proposals (each seat's answer, and the candidate it was merged into)"]
                for row in s.rows:
                    out.append(f"  {row.candidate}")
                    out += [f"    ← {seat}: {text}" for seat, text in row.by]
                if s.failed:
                    out.append(f"  (no proposal from {', '.join(s.failed)}: it failed)")
                out.append(wrap(f"Merge rule: {s.rule}.", "  "))
            case c.Notes():
                out += ["", s.heading] + [wrap(line, "  ") for line in s.lines]
            case c.Summary():
                out += ["", "Summary"]
                for heading, text in s.parts:
                    out += [f"  {heading}:", wrap(text)] if heading else [wrap(text, "  ")]
            case c.Arguments():
                out += ["", "Strongest arguments (picked by the moderator among the rationales given)"]
                for option, a in s.items:
                    out += [f"  {style(option, bold=True)} — {a.participant}, round {a.round}:", wrap(f"“{a.text}”")]
            case c.ModeratorFailure():
                out += ["", style(f"Moderator: no report ({s.reason})", fg="red")]
            case c.VoteMatrix():
                out += ["", "Vote matrix"]
                name_w = max(len(name) for name, _ in s.rows)
                col = min(max([3, *(len(o) for o in card.options)]), 16)
                out.append("  " + " " * name_w + "  " + "  ".join(f"{'R' + str(r):<{col}}" for r in s.rounds))
                for name, votes in s.rows:
                    out.append("  " + f"{name:<{name_w}}  " + "  ".join(f"{(v or '—')[:col]:<{col}}" for v in votes))
            case c.TurningPoints():
                out += ["", "Turning points (changes of a seat's most probable option)"]
                if not s.points:
                    out.append("  None: nobody changed their mind.")
                for p in s.points:
                    who = f" (persuaded by {p.attributed_to})" if p.attributed_to else ""
                    out.append(f"  Round {p.round}: {p.participant} {p.from_vote} → {p.to_vote}{who}")
                    if p.rationale:
                        out.append(wrap(f"“{p.rationale}”", "      "))
            case c.Persuasion():
                if s.edges:
                    out += ["", "Who moved whom"]
                    out += [f"  {e.source} → {e.target}" + (f" ×{e.count}" if e.count > 1 else "") for e in s.edges]
                    if s.most_persuasive:
                        out.append(f"  Most persuasive: {s.most_persuasive}")
            case c.Paths():
                out += ["", "Each seat's probability for the option it ended on, round by round"]
                name_w = max(len(r.participant) for r in s.rows)
                for r in s.rows:
                    path = " → ".join("—" if p is None else f"{p:.2f}" for p in r.probabilities)
                    out.append(f"  {r.participant:<{name_w}}  {r.option} {path}")
                out += [wrap(x, "  ") for x in s.shifts]
            case c.Ballots():
                if not s.final:
                    continue
                out += ["", "Votes" + (f" (round {s.number})" if s.number is not None else "")]
                for b in s.ballots:
                    out.append("  " + style(b.participant, bold=True) + style(f" · {b.model}", dim=True))
                    if not b.valid:
                        out.append(style(f"    Abstained: {b.failure}", fg="red"))
                        continue
                    extra = f"   (p: {b.confidence})" if b.confidence else ""
                    out.append(f"    Vote: {style(b.vote, bold=True)}{b.drawn}{extra}")
                    if b.attributed_to:
                        out.append(f"    Persuaded by: {b.attributed_to}")
                    out.append(wrap(b.rationale))
                    if b.copied:
                        out.append(style(wrap(b.copied), fg="yellow"))
            case c.Footer():
                out += ["", style(s.text, dim=True)]
    return "\n".join(line.rstrip() for line in out) + "\n"
