"""A backend that replays canned ballots: fast tests of everything above the runtime, and dry runs."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from localpanel.engine.runtime import ChoiceRecord, Generation, GenerationRequest, Message, TokenCallback, each_alone
from localpanel.weights.registry import ModelSpec


@dataclass
class Failed:
    """A scripted turn that fails, as a cut-off generation would."""

    reason: str


def shown_options(content: str) -> list[str]:
    """The options in the order a prompt shows them (the lines after "Options (vote for exactly one):")."""
    lines = content.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Options (vote for exactly one)")), None)
    if start is None:
        return []
    out = []
    for line in lines[start + 1 :]:
        if not line.startswith("- "):
            break
        out.append(line[2:])
    return out


@dataclass
class PositionBiased:
    """A model whose probabilities depend on where each option is shown: ``prior(order)`` gives them for the
    order shown. It scores the vote as the real backend does (under every rotation it is given, averaged) and
    draws it with the same Gumbel-max draw, so a test can see the bias and its correction exactly."""

    prior: object  # Callable[[list[str]], dict[str, float]]
    rationale: str = "A scripted rationale that ends here."

    def __call__(self, request: GenerationRequest) -> Generation:
        from localpanel.engine.draw import average, choose

        user = [m for m in request.messages if m.role == "user"][-1]
        orders = [shown_options(user.content)] + [shown_options(v) for v in user.variants or []]
        values = list(request.schema_["properties"]["vote"]["enum"])
        rows = [[self.prior(order)[v] for v in values] for order in orders]
        probs = average(rows)
        chosen = choose(values, probs, request.sampling.temperature, request.seed, "vote", draw=request.sampling.draw_choices)
        record = ChoiceRecord(values=values, probabilities=probs, chosen=chosen, raw=rows[0] if len(rows) > 1 else None)
        ballot = {"vote": values[chosen], "rationale": self.rationale}
        if "attributed_to" in request.schema_["properties"]:
            ballot["attributed_to"] = None
        text = json.dumps(ballot)
        return Generation(text=text, tokens=[ord(c) for c in text], choices={"vote": record}, completion_tokens=len(text))


class ScriptedBackend:
    """``enqueue(key, ballot, ...)`` queues answers per participant (the moderator's key is "[moderator]").

    A ballot is a dict (dumped as JSON; an optional "confidence" entry gives the option probabilities),
    raw text, or `Failed`. With nothing queued, ``default`` (a function of the request) answers.
    """

    def __init__(self, default=None, context_length: int = 4096):
        self.queues: dict[str, list] = defaultdict(list)
        self.default = default
        self.requests: list[GenerationRequest] = []
        self.window = context_length

    def enqueue(self, key: str, *answers) -> "ScriptedBackend":
        self.queues[key].extend(answers)
        return self

    def generate(self, request: GenerationRequest, on_token: TokenCallback | None = None) -> Generation:
        self.requests.append(request)
        queue = self.queues.get(request.key)
        if not queue and request.key.startswith("[moderator]"):  # one queue for all the moderator's passages
            queue = self.queues.get("[moderator]")
        answer = queue.pop(0) if queue else (self.default(request) if self.default else None)
        if answer is None:
            raise AssertionError(f"nothing scripted for {request.key!r}")
        prompt_tokens = self._count(request.messages)
        if isinstance(answer, Generation):
            answer.prompt_tokens = prompt_tokens
            return answer
        if isinstance(answer, Failed):
            return Generation(text="", tokens=[], prompt_tokens=prompt_tokens, failure=answer.reason)
        choices = {}
        if isinstance(answer, dict):
            answer = dict(answer)
            confidence = answer.pop("confidence", None)
            if "vote" in answer and "enum" in request.schema_["properties"].get("vote", {}):
                options = request.schema_["properties"]["vote"].get("enum") or [answer["vote"]]
                probs = [confidence.get(o, 0.0) for o in options] if confidence else [float(o == answer["vote"]) for o in options]
                choices["vote"] = ChoiceRecord(values=list(options), probabilities=probs, chosen=options.index(answer["vote"]) if answer["vote"] in options else 0)
            text = json.dumps(answer, ensure_ascii=False)
        else:
            text = str(answer)
        tokens = [ord(c) for c in text]
        if on_token:
            on_token(len(tokens))
        return Generation(text=text, tokens=tokens, choices=choices, prompt_tokens=prompt_tokens,
                          completion_tokens=len(tokens), seconds=0.001)

    def generate_many(self, requests, on_token=None, on_done=None):
        return each_alone(self, requests, on_token, on_done)

    def _count(self, messages: list[Message]) -> int:
        return sum(len(m.content) for m in messages) // 4 + 1

    def count_tokens(self, model: ModelSpec, model_path: Path, messages: list[Message]) -> int:
        return self._count(messages)

    def token_bound(self, model: ModelSpec, model_path: Path, messages: list[Message]) -> int:
        return self._count(messages)

    def context_length(self, model: ModelSpec, model_path: Path) -> int:
        return self.window

    def describe(self) -> dict:
        return {"backend": "scripted"}

    def close(self) -> None:
        pass
