"""The moderator: picks the strongest argument for each option (by number, so it cannot invent one) and
writes a short summary, both under a grammar. Everything else in a result is derived from the ballots."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ValidationError

from .ballot import moderator_model
from .protocol import Question, Turn
from .registry import ModelSpec
from .runtime import Backend, GenerationRequest, Message, Sampling

MODERATOR_KEY = "[moderator]"
MODERATOR_SAMPLING = Sampling(temperature=0.3, top_k=40, top_p=0.9, min_p=0.05, repeat_penalty=1.1)


class Argument(BaseModel):
    number: int
    participant: str
    round: int
    vote: str
    text: str


class ModeratorReport(BaseModel):
    model: str
    strongest: dict[str, Argument] = {}
    summary: str | None = None
    failure: str | None = None
    seed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    text: str = ""
    tokens: list[int] = []


def numbered_arguments(rounds: list[list[Turn]]) -> list[Argument]:
    """Every distinct rationale given, numbered from 1 in the order it was given."""
    seen: set[str] = set()
    args: list[Argument] = []
    for turns in rounds:
        for t in turns:
            if t.valid and t.rationale and t.rationale.strip() not in seen:
                seen.add(t.rationale.strip())
                args.append(Argument(number=len(args) + 1, participant=t.participant, round=t.round, vote=t.vote, text=t.rationale.strip()))
    return args


def moderator_seed(run_seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{run_seed}|moderator".encode()).digest()[:4], "little")


def moderator_messages(question: Question, result: str, args: list[Argument]) -> list[Message]:
    system = (
        "You are the neutral moderator of a panel of AI models. You report what the panelists argued and add "
        'no opinion of your own. Reply with JSON: "strongest" gives, for each option, the number of the '
        'strongest argument made for it; "summary" recounts the discussion in two to four plain sentences, '
        "naming the panelists."
    )
    lines = [f"Question: {question.text}", f"Result: {result}", "Arguments made (numbered):"]
    lines += [f"[{a.number}] {a.participant}, round {a.round}, for {a.vote}: {a.text}" for a in args]
    lines.append("Pick the strongest argument for each option, then summarize the discussion.")
    return [Message(role="system", content=system), Message(role="user", content="\n".join(lines))]


def moderate(
    question: Question,
    rounds: list[list[Turn]],
    result: str,
    model: ModelSpec,
    model_path: Path,
    backend: Backend,
    run_seed: int,
    max_tokens: int = 384,
) -> ModeratorReport:
    args = numbered_arguments(rounds)
    seed = moderator_seed(run_seed)
    report = ModeratorReport(model=model.name, seed=seed)
    candidates = {o: [a.number for a in args if a.vote == o] for o in question.options}
    candidates = {o: nums for o, nums in candidates.items() if nums}
    if not candidates:
        report.failure = "no valid ballots to moderate"
        return report
    report_cls = moderator_model(candidates)
    messages = moderator_messages(question, result, args)
    request = GenerationRequest(
        key=MODERATOR_KEY,
        model=model,
        model_path=model_path,
        messages=messages,
        context_hint=backend.count_tokens(model, model_path, messages) + max_tokens,
        schema=report_cls.model_json_schema(by_alias=True),
        sampling=MODERATOR_SAMPLING,
        seed=seed,
        max_tokens=max_tokens,
    )
    g = backend.generate(request)
    report.prompt_tokens, report.completion_tokens = g.prompt_tokens, g.completion_tokens
    report.seconds, report.text, report.tokens = round(g.seconds, 4), g.text, g.tokens
    if g.failure:
        report.failure = g.failure
        return report
    try:
        data = json.loads(g.text)
        report_cls.model_validate(data)
    except (ValueError, ValidationError) as exc:
        report.failure = f"the moderator's report did not validate ({str(exc).splitlines()[0]})"
        return report
    by_number = {a.number: a for a in args}
    report.strongest = {option: by_number[n] for option, n in data["strongest"].items()}
    report.summary = data["summary"].strip()
    return report
