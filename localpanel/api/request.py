"""One run as it is asked for: the question and its kind, the options, who sits, the settings, the moderator
switch, the runtime and where it is saved. The Python API, the CLI, the page and the MCP server each build one
``RunRequest``; ``resolved`` is the one place a run's arguments are checked and defaulted (Yes and No when no
option is given, one seat per ``models`` name), and the manifest records what it resolved to."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from localpanel.engine.runtime import RuntimeSettings
from localpanel.errors import InputError
from localpanel.panel.protocol import DebateSettings
from localpanel.weights.registry import Registry

# What a question asks for: one of the options, a whole number, or (open) an answer each seat proposes, merged into
# the candidates the panel then votes among.
QuestionKind = Literal["options", "integer", "open"]
DEFAULT_OPTIONS = ["Yes", "No"]


class RunRequest(BaseModel):
    """A poll (``settings.rounds == 1``) or a debate, as asked for."""

    model_config = ConfigDict(extra="forbid")
    question: str
    kind: QuestionKind = "options"
    options: list[str] = Field(default_factory=list, description="the choices; none: Yes and No")
    panel: str | None = Field(default=None, description="a panel of models.yaml (default: its default panel)")
    models: list[str] = Field(default_factory=list, description="seat these models instead of a panel, one seat each")
    settings: DebateSettings = Field(default_factory=DebateSettings)
    moderator: bool = True
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    run_dir: Path | None = Field(default=None, description="where the run is saved (default: under the store's runs/)")
    context: list[Path] = Field(default_factory=list, description="documents every seat reads before the question")

    def resolved(self) -> "RunRequest":
        """The request with its defaults filled in, or the one sentence that says what is wrong with it."""
        if self.panel and self.models:
            raise InputError("Give either a panel or models, not both.")
        options = list(self.options)
        if self.kind in ("integer", "open"):
            if options:
                what = "A question with an integer answer" if self.kind == "integer" else "An open question"
                raise InputError(f"{what} has no options; leave them out.")
            return self.model_copy(update={"options": []})
        if len(options) == 1:
            raise InputError("A vote needs at least 2 options, got 1; give more, or none for Yes and No.")
        return self.model_copy(update={"options": options or list(DEFAULT_OPTIONS)})

    def seated(self, registry: Registry) -> tuple[Registry, str | None]:
        """The registry the run reads and the panel it names: ``models`` seated one by one become a panel."""
        if not self.models:
            return registry, self.panel
        chosen = registry.models_panel(list(self.models))
        return registry.with_panel(chosen), chosen.name

    @classmethod
    def from_json(cls, data: object) -> "RunRequest":
        """A request from untyped JSON (the page's, MCP's): every field of its own type exactly (no number for a
        string, no 2.5 or Infinity for a whole number), no field it does not know, each error one sentence."""
        if not isinstance(data, dict):
            raise InputError("Send the run as a JSON object.")
        if not isinstance(data.get("question"), str) or not data["question"].strip():
            raise InputError("Give a question.")
        try:
            flat = _Flat.model_validate(data)
        except ValidationError as exc:
            raise InputError(_sentence(exc)) from None
        settings = DebateSettings.checked(rounds=flat.rounds, **({"seed": flat.seed} if flat.seed is not None else {}))
        options = [o for o in flat.options or [] if o.strip()]  # the page's blank lines
        if flat.integer and flat.open:
            raise InputError("A question is either open or has an integer answer; set one of open and integer.")
        kind = "integer" if flat.integer else "open" if flat.open else "options"
        return cls(question=flat.question, kind=kind, options=options, context=[Path(c) for c in flat.context or []],
                   panel=flat.panel or None, models=flat.models or [], settings=settings, moderator=flat.moderator)


class _Flat(BaseModel):
    """The page's and MCP's run request as it arrives: flat, strictly typed."""

    model_config = ConfigDict(extra="forbid", strict=True)
    question: str
    options: list[str] | None = None
    panel: str | None = None
    models: list[str] | None = None
    rounds: int = 1
    seed: int | None = None
    integer: bool = False
    open: bool = False
    context: list[str] | None = None
    moderator: bool = True


_WANT = {"question": "a string", "options": "a list of strings", "panel": "the name of a panel (a string)",
         "models": "a list of model names", "rounds": "a whole number",
         "seed": "a whole number of 0 or more", "integer": "true or false", "open": "true or false", "context": "a list of paths of text files on this machine", "moderator": "true or false"}


def _sentence(exc: ValidationError) -> str:
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else "the request"
    if error["type"] == "extra_forbidden":
        return f"{name} is not a setting of a run; the settings are {', '.join(_Flat.model_fields)}."
    return f"{name} must be {_WANT.get(name, error['msg'].lower())}; got {error.get('input')!r}."
