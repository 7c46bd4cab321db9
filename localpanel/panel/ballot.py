"""Ballot types, built per question from its options: what every participant's answer must be."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

from localpanel.engine.grammar import NULL_WHEN, TEXT_PATTERN

RATIONALE_MIN = 12
INTEGER_BOUND = 10**12 - 1
RATIONALE_MAX = 400
# A rationale written before the vote is the model's working: room for it (the decoder closes it past half).
REASONING_MAX = 800
CASE_MIN = 30
CASE_MAX = 320


def ballot_model(
    options: list[str],
    attributable: list[str] | None = None,
    previous_vote: str | int | None = None,
    reason_first: bool = False,
) -> type[BaseModel]:
    """The ballot for one turn: a vote among ``options`` (an integer when there are none), a rationale, and in
    debate rounds ``attributed_to``. With ``reason_first`` the rationale comes before the vote.

    ``attributable`` lists who may be credited with changing this participant's mind (the others); the field
    is absent in a poll or a first round. With ``previous_vote`` the attribution is forced to null when the
    vote does not change.
    """
    vote = (Literal[tuple(options)], ...) if options else (int, Field(ge=-INTEGER_BOUND, le=INTEGER_BOUND))
    longest = REASONING_MAX if reason_first else RATIONALE_MAX
    rationale = (str, Field(min_length=RATIONALE_MIN, max_length=longest, pattern=TEXT_PATTERN))
    fields: dict = {"rationale": rationale, "vote": vote} if reason_first else {"vote": vote, "rationale": rationale}
    if attributable is not None:
        extra = {NULL_WHEN: {"field": "vote", "equals": previous_vote}} if previous_vote is not None else None
        choices = Optional[Literal[tuple(attributable)]] if attributable else type(None)
        fields["attributed_to"] = (choices, Field(..., json_schema_extra=extra))
    return create_model("Ballot", __config__=ConfigDict(extra="forbid"), **fields)


def case_model(numbers: list[int]) -> type[BaseModel]:
    """The moderator's passage for one option: the number of its strongest rationale (one of those given, so it
    cannot invent one), then the case made for it in the moderator's words."""
    return create_model(
        "Case",
        __config__=ConfigDict(extra="forbid"),
        strongest=(Literal[tuple(numbers)], ...),
        case=(str, Field(min_length=CASE_MIN, max_length=CASE_MAX, pattern=TEXT_PATTERN)),
    )
