"""Coherence: does a rationale argue for the vote it accompanies?

A judge model reads each rationale without its vote and picks, under a grammar-forced choice, the option
it argues for; the option is scored under every rotation of the options and averaged (as votes are), and
taken greedily. Coherence is the share of ballots whose vote is the judge's reading. It sits beside the
moderator: it reads finished turns and never changes a result.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, create_model

from localpanel.engine.draw import rotate, shifts
from localpanel.engine.runtime import Backend, Generation, GenerationRequest, Message, Sampling
from localpanel.panel.protocol import Question, Turn, canonical_order
from localpanel.weights.registry import ModelSpec

JUDGE_KEY = "[judge]"
JUDGE_SAMPLING = Sampling(temperature=0.0, repeat_penalty=1.0)
SYSTEM = (
    "You read one panelist's rationale on a question and say which option it argues for. Judge the argument "
    'alone, not what you think is right. Reply with JSON: "option" is exactly one of the options.'
)


class Reading(BaseModel):
    """The judge's reading of one ballot's rationale."""

    participant: str
    round: int
    vote: str
    read_as: str | None
    probability: float | None  # the judge's (averaged) probability of the option it read
    failure: str | None = None

    @property
    def coherent(self) -> bool:
        return self.read_as == self.vote


def reading_model(options: list[str]) -> type[BaseModel]:
    return create_model("Reading", __config__=ConfigDict(extra="forbid"), option=(Literal[tuple(sorted(options))], ...))


def judge_prompt(question: Question, order: list[str], rationale: str) -> str:
    # The options come last, so that scoring another rotation re-reads only them, not the rationale.
    return (
        f"Question: {question.text}\nA panelist's rationale: {rationale}\nWhich of these options does it argue for?\n"
        + "\n".join(f"- {o}" for o in order)
    )


def judge(
    question: Question, turns: list[Turn], model: ModelSpec, model_path: Path, backend: Backend, seed: int = 0,
    batch: int = 8,
) -> list[Reading]:
    """Read every valid ballot's rationale (in batches of ``batch`` sequences on the judge's model)."""
    valid = [t for t in turns if t.valid and question.options]
    canonical = canonical_order(question.options, seed)
    rotations = shifts(len(canonical))
    readings: list[Reading] = [
        Reading(participant=t.participant, round=t.round, vote=t.vote, read_as=None, probability=None) for t in valid
    ]
    schema = reading_model(question.options).model_json_schema()

    def request(i: int, t: Turn) -> GenerationRequest:
        order = rotate(canonical, i)
        user = Message(role="user", content=judge_prompt(question, order, t.rationale or ""),
                       variants=[judge_prompt(question, rotate(order, k), t.rationale or "") for k in rotations[1:]] or None)
        messages = [Message(role="system", content=SYSTEM), user]
        return GenerationRequest(
            key=f"{JUDGE_KEY} {i % batch}", model=model, model_path=model_path, messages=messages, schema=schema,
            sampling=JUDGE_SAMPLING, seed=int.from_bytes(hashlib.sha256(f"{seed}|judge|{i}".encode()).digest()[:4], "little"),
            max_tokens=64, context_base=messages, context_extra=64,
        )

    def done(offset: int):
        def read(i: int, g: Generation) -> None:
            r = readings[offset + i]
            choice = g.choices.get("option")
            if g.failure or choice is None:
                r.failure = g.failure or "no choice recorded"
                return
            r.read_as = choice.values[choice.chosen]
            r.probability = round(choice.probabilities[choice.chosen], 6)
        return read

    for start in range(0, len(valid), batch):
        chunk = [request(start + j, t) for j, t in enumerate(valid[start : start + batch])]
        backend.generate_many(chunk, on_done=done(start))
    return readings


def coherence(readings: list[Reading]) -> float | None:
    judged = [r for r in readings if r.read_as is not None]
    return sum(r.coherent for r in judged) / len(judged) if judged else None
