"""Ballot types, built per question from its options: what every participant's answer must be."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

from .grammar import NULL_WHEN, TEXT_PATTERN

RATIONALE_MIN = 12
RATIONALE_MAX = 400
CASE_MIN = 30
CASE_MAX = 300


def ballot_model(
    options: list[str], attributable: list[str] | None = None, previous_vote: str | None = None
) -> type[BaseModel]:
    """The ballot for one turn: a vote among ``options``, a rationale, and in debate rounds ``attributed_to``.

    ``attributable`` lists who may be credited with changing this participant's mind (the others); the field
    is absent in a poll or a first round. With ``previous_vote`` the attribution is forced to null when the
    vote does not change.
    """
    fields: dict = {
        "vote": (Literal[tuple(options)], ...),
        "rationale": (str, Field(min_length=RATIONALE_MIN, max_length=RATIONALE_MAX, pattern=TEXT_PATTERN)),
    }
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
