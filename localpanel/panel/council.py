"""An open question's answer as the council gives it, in fixed fields that each cite seats.

Nothing here is asked of a model: the answer and who voted it come from the ballots; where the seats agree is the
moderator's case for the winning candidate (written only from the rationales of the seats that ended on it, so it
cites them); where they disagree is its case for each other candidate two or more seats held at the end; a point only one seat
made is the case for a candidate one seat alone held (its own rationale, quoted). A field the run has nothing for is left empty.
"""

from __future__ import annotations

from pydantic import BaseModel

from localpanel.panel.moderator import ModeratorReport
from localpanel.panel.tally import Tally, margin_line
from localpanel.panel.terms import Turn


class Cited(BaseModel):
    candidate: str
    text: str
    seats: list[str]


class Council(BaseModel):
    answer: str | None  # the winning candidate (None: a tie or no valid ballot)
    answer_seats: list[str]  # who voted it in the last round
    margin: str | None
    consensus: Cited | None = None
    disagreements: list[Cited] = []
    single_points: list[Cited] = []


def council(final: Tally, last: list[Turn], report: ModeratorReport | None) -> Council:
    held: dict[str, list[str]] = {}
    for t in last:
        if t.valid:
            held.setdefault(t.vote, []).append(t.participant)
    out = Council(answer=final.winner, answer_seats=held.get(final.winner, []) if final.winner else [],
                  margin=margin_line(final))
    if report is None:
        return out
    for p in report.passages:
        seats = held.get(p.option, [])
        if p.failure or not p.text or not seats:
            continue  # no case written, or a candidate nobody held at the end: not a position of the council
        cited = Cited(candidate=p.option, text=p.text, seats=seats)
        if p.option == final.winner:
            out.consensus = cited
        elif len(seats) == 1:
            out.single_points.append(cited)
        else:
            out.disagreements.append(cited)
    return out
