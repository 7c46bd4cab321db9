"""Turn a conversation into the exact text a model reads: its own chat template, or a plain prompt for base models.

Every format renders a conversation so that the text for N turns is a prefix of the text for N+1 turns;
that is what lets a participant's KV cache carry over from one round to the next.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
from datetime import datetime
from typing import Protocol

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from localpanel.engine.runtime import Message
from localpanel.errors import ModelLoadError
from localpanel.weights.registry import ModelSpec


class PromptFormat(Protocol):
    name: str

    def render(self, messages: list[Message]) -> str:
        """The prompt for the next assistant turn (generation prompt included)."""


class CompletionPrompt:
    """For base models without a chat template: a plain document the model continues."""

    name = "completion"
    answer_cue = "Answer (JSON):\n"

    def render(self, messages: list[Message]) -> str:
        parts: list[str] = []
        for m in messages:
            if m.role == "system":
                parts.append(m.content.strip() + "\n\n")
            elif m.role == "user":
                parts.append(m.content.strip() + "\n" + self.answer_cue)
            else:
                parts.append(m.content + "\n\n")
        return "".join(parts)


def _raise(message: str):
    raise jinja2.TemplateError(message)


# The date templates print (Llama 3.x writes "Today Date: ..." into every prompt): the run's own date while a
# run is being made, resumed or replayed, so that the same run renders the same prompts on another day.
_RUN_DATE: contextvars.ContextVar[datetime | None] = contextvars.ContextVar("run_date", default=None)


def _today() -> datetime:
    return datetime.now()


@contextlib.contextmanager
def run_date(created_at: str):
    """Render every template inside with the date of a run (its manifest's ``created_at``, ISO 8601 UTC)."""
    token = _RUN_DATE.set(datetime.strptime(created_at, "%Y-%m-%dT%H:%M:%SZ"))
    try:
        yield
    finally:
        _RUN_DATE.reset(token)


def strftime_now(fmt: str) -> str:
    return (_RUN_DATE.get() or _today()).strftime(fmt)


class ChatTemplate:
    """A model's Jinja chat template (from its GGUF or models.yaml), rendered the way transformers does."""

    name = "chat"

    def __init__(self, source: str, bos: str, eos: str, system_role: str = "auto"):
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
        env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, ensure_ascii=False, indent=indent)
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = strftime_now
        try:
            self.template = env.from_string(source)
        except jinja2.TemplateError as exc:
            raise ModelLoadError(f"the chat template does not parse ({exc}); set chat_template in models.yaml.") from None
        self.bos, self.eos = bos, eos
        self.fold_system = system_role == "fold" or (system_role == "auto" and not self._takes_system())

    def _takes_system(self) -> bool:
        probe = [Message(role="system", content="SYSTEM-PROBE"), Message(role="user", content="USER-PROBE")]
        try:
            return "SYSTEM-PROBE" in self._render(probe)
        except jinja2.TemplateError:
            return False

    def _render(self, messages: list[Message]) -> str:
        return self.template.render(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            bos_token=self.bos,
            eos_token=self.eos,
        )

    def render(self, messages: list[Message]) -> str:
        if self.fold_system:
            messages = fold_system(messages)
        try:
            return self._render(messages)
        except jinja2.TemplateError as exc:
            raise ModelLoadError(f"the chat template failed to render ({exc}); set chat_template in models.yaml.") from None


@functools.lru_cache(maxsize=32)
def _chat_template(source: str, bos: str, eos: str, system_role: str) -> ChatTemplate:
    """Compiling a template takes milliseconds and a run asks for one per participant: compile each once."""
    return ChatTemplate(source, bos, eos, system_role)


def fold_system(messages: list[Message]) -> list[Message]:
    """Move a system message into the first user turn, for templates that reject a system role."""
    if not messages or messages[0].role != "system":
        return messages
    system, rest = messages[0], list(messages[1:])
    for i, m in enumerate(rest):
        if m.role == "user":
            rest[i] = m.model_copy(update={"content": system.content.strip() + "\n\n" + m.content})
            return rest
    return [Message(role="user", content=system.content)] + rest


def prompt_format(spec: ModelSpec, gguf_template: str | None, bos: str, eos: str) -> PromptFormat:
    """Pick how to prompt a model: a models.yaml template, else the GGUF's, else a plain completion prompt."""
    if spec.prompt_format == "completion":
        return CompletionPrompt()
    template = spec.chat_template or gguf_template
    if template:
        return _chat_template(template, bos, eos, spec.system_role)
    if spec.prompt_format == "chat":
        raise ModelLoadError(
            f"model {spec.name!r} has prompt_format: chat but its GGUF has no chat template; "
            "set chat_template in models.yaml or use prompt_format: completion."
        )
    return CompletionPrompt()
