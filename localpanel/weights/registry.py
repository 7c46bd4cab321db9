"""models.yaml: which models exist (pinned by sha256), where their bytes come from, and panels."""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from localpanel.errors import RegistryError, UnknownModelError, UnknownPanelError
from localpanel.weights.paths import default_home
from localpanel.weights.source_specs import (  # noqa: F401  (re-exported: where they were)
    FileSource,
    HFSource,
    PartsSource,
    PyPISource,
    Source,
    parse_source,
)

MAX_SEATS = 64  # participants in one panel
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MODELS_PANEL = "models"  # the panel that --model builds


class ModelSpec(BaseModel):
    """One model: a sha256 and the ways to get those bytes."""

    model_config = ConfigDict(extra="forbid")
    name: str
    sha256: str | None = None
    size: int | None = Field(default=None, gt=0)
    license: str | None = None
    description: str | None = None
    # auto: the GGUF's chat template when it has one, else a plain completion prompt.
    prompt_format: Literal["auto", "chat", "completion"] = "auto"
    chat_template: str | None = None
    # Some templates (Gemma's) reject a system turn; fold it into the first user turn then.
    system_role: Literal["auto", "native", "fold"] = "auto"
    context_length: int | None = Field(default=None, ge=256)
    gpu_layers: int | None = Field(default=None, ge=-1)
    sources: list[Source] = Field(min_length=1)

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.lower()
        if not SHA256_RE.match(v):
            raise ValueError("sha256 must be 64 hexadecimal characters")
        return v

    @property
    def pinned(self) -> bool:
        return self.sha256 is not None


class Participant(BaseModel):
    """A seat on a panel: a named model with a persona and its own sampling settings."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=60)
    model: str
    persona: str | None = None
    seed: int = Field(default=0, ge=0)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_k: int = Field(default=40, ge=0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    min_p: float = Field(default=0.05, ge=0.0, lt=1.0)
    repeat_penalty: float = Field(default=1.1, ge=1.0, le=2.0)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v != v.strip() or any(c in v for c in '"\\\n\t'):
            raise ValueError("a participant name cannot contain quotes, backslashes or line breaks")
        return v


class Panel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str | None = None
    participants: list[Participant] = Field(min_length=1, max_length=MAX_SEATS)
    # The model that writes the summary and picks the strongest arguments; default: the first participant's.
    moderator: str | None = None
    # Bound on resident model weights, e.g. "6GiB"; least recently used models are unloaded.
    max_memory: str | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> "Panel":
        seen: set[str] = set()
        for p in self.participants:
            key = p.name.casefold()
            if key in seen:
                raise ValueError(f"participant name {p.name!r} appears twice")
            seen.add(key)
        return self

    @property
    def moderator_model(self) -> str:
        return self.moderator or self.participants[0].model


class Registry(BaseModel):
    """models.yaml as read: the models (each pinned by sha256, with its sources) and the panels that seat them."""

    model_config = ConfigDict(extra="forbid")
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    panels: dict[str, Panel] = Field(default_factory=dict)
    default_panel: str = "default"
    path: Path | None = Field(default=None, exclude=True)
    # Where each "models.NAME" and "panels.NAME" was read from (the shipped file, the user's, ./models.yaml), and the
    # file `add` writes to: the one named with --models/LOCALPANEL_MODELS, else the user's under LOCALPANEL_HOME.
    origins: dict[str, Path] = Field(default_factory=dict, exclude=True)
    writable: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _names_from_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("the top level must be a mapping with 'models' and 'panels'")
        for section in ("models", "panels"):
            entries = data.get(section)
            if entries is None:
                data[section] = {}
            elif isinstance(entries, dict):
                for key, entry in entries.items():
                    if isinstance(entry, dict):
                        entry.setdefault("name", key)
        return data

    @model_validator(mode="after")
    def _references(self) -> "Registry":
        for key in list(self.models) + list(self.panels):
            if not NAME_RE.match(key):
                raise ValueError(f"{key!r} is not a valid name (letters, digits, '.', '_', '-')")
        for panel in self.panels.values():
            for who in panel.participants:
                if who.model not in self.models:
                    raise ValueError(f"panel {panel.name!r}: participant {who.name!r} uses unknown model {who.model!r}")
            if panel.moderator and panel.moderator not in self.models:
                raise ValueError(f"panel {panel.name!r}: moderator uses unknown model {panel.moderator!r}")
        if self.panels and self.default_panel not in self.panels:
            raise ValueError(f"default_panel {self.default_panel!r} is not one of the panels")
        return self

    def model(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none"
            raise UnknownModelError(f"Unknown model {name!r} (known models: {known}); see `localpanel models`.") from None

    def models_panel(self, names: list[str]) -> Panel:
        """A panel seating these models, one seat per name in the order given (``--model``), named after them."""
        if len(names) > MAX_SEATS:
            raise RegistryError(f"A panel seats at most {MAX_SEATS} participants; {len(names)} models were given.")
        for name in names:
            self.model(name)  # one sentence for an unknown model
        total = {n: names.count(n) for n in names}
        seen: dict[str, int] = {}
        seats = []
        for i, name in enumerate(names):
            seen[name] = seen.get(name, 0) + 1
            label = name if total[name] == 1 else f"{name} #{seen[name]}"
            seats.append(Participant(name=label, model=name, seed=i + 1))
        return Panel(name=MODELS_PANEL, description="Seats given with --model.", participants=seats)

    def with_panel(self, panel: Panel) -> "Registry":
        return self.model_copy(update={"panels": {**self.panels, panel.name: panel}})

    def panel(self, name: str | None = None) -> Panel:
        name = name or self.default_panel
        try:
            return self.panels[name]
        except KeyError:
            known = ", ".join(sorted(self.panels)) or "none"
            raise UnknownPanelError(f"Unknown panel {name!r} (panels in {self.path}: {known}).") from None


def shipped_registry_path() -> Path:
    """The models.yaml that comes with the package (or the source checkout)."""
    packaged = resources.files("localpanel").joinpath("models.yaml")
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "models.yaml"


def registry_path(explicit: str | os.PathLike | None = None) -> Path | None:
    """--models FILE, else $LOCALPANEL_MODELS; None: the layered registry (see ``registry_layers``)."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("LOCALPANEL_MODELS")
    return Path(env) if env else None


def user_registry_path() -> Path:
    """The user's own models.yaml, where `add` pins what the user adds: $LOCALPANEL_HOME/models.yaml."""
    return default_home() / "models.yaml"


def registry_layers() -> list[Path]:
    """The files the registry is read from, lowest first: the shipped one, the user's, and ./models.yaml. Each
    adds models and panels to those below it (an entry of the same name replaces the one below)."""
    layers = [shipped_registry_path()]
    for path in (user_registry_path(), Path.cwd() / "models.yaml"):
        if path.is_file() and all(path.resolve() != p.resolve() for p in layers):
            layers.append(path)
    return layers


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that rejects a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (first on line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """The line (1-based) of the YAML node that a pydantic error location points at."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    node, line = value_node, key_node.start_mark.line + 1
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def parse_registry(text: str, path: Path) -> Registry:
    """Parse and validate models.yaml text; errors name the file, line and key at fault."""
    return parse_layers([(text, path)])


def parse_layers(layers: list[tuple[str, Path]]) -> Registry:
    """Parse several models.yaml texts, lowest first, and validate them merged: a panel in one file may seat a
    model of another. Errors name the file, line and key at fault."""
    merged: dict = {"models": {}, "panels": {}}
    origins: dict[str, Path] = {}
    roots = {}
    for text, path in layers:
        data, root = _read_layer(text, path)
        roots[path] = root
        for section in ("models", "panels"):
            for name, entry in (data.get(section) or {}).items():
                merged[section][name] = entry
                origins[f"{section}.{name}"] = path
        if "default_panel" in data:
            merged["default_panel"] = data["default_panel"]
            origins["default_panel"] = path
    top = layers[-1][1]

    def fail(loc: tuple, msg: str) -> RegistryError:
        path = origins.get(".".join(str(p) for p in loc[:2]), origins.get(str(loc[0]) if loc else "", top))
        line = _line_of(roots.get(path), loc)
        key = ".".join(str(p) for p in loc) or "top level"
        return RegistryError(f"{path}:{line}: {key}: {msg}." if line else f"{path}: {key}: {msg}.")

    try:
        registry = Registry.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in {"hf", "pypi", "file", "parts"}))
        raise fail(loc, err["msg"].removeprefix("Value error, ")) from None
    registry.path = top
    registry.origins = origins
    return registry


def _read_layer(text: str, path: Path):
    """One file's YAML as data (its sources resolved against its own folder) and as nodes (for line numbers)."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        if isinstance(exc, yaml.constructor.ConstructorError) and "appears twice" in str(exc.problem):
            raise RegistryError(f"{where}: {exc.problem}.") from None
        raise RegistryError(f"{where}: {path.name} is not valid YAML ({exc.problem or exc.context}).") from None
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: {path.name} is not valid YAML ({exc}).") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RegistryError(f"{path}: the top level must be a mapping with 'models' and 'panels'.")
    unknown = set(data) - {"models", "panels", "default_panel"}
    if unknown:
        key = sorted(unknown)[0]
        line = _line_of(root, (key,))
        raise RegistryError(f"{path}:{line}: {key}: Extra inputs are not permitted." if line else f"{path}: {key}: Extra inputs are not permitted.")
    base_dir = path.resolve().parent
    for section in ("models", "panels"):
        if data.get(section) is not None and not isinstance(data[section], dict):
            line = _line_of(root, (section,))
            raise RegistryError(f"{path}:{line}: {section}: Input should be a valid dictionary.")
    for name, entry in (data.get("models") or {}).items():
        if isinstance(entry, dict) and isinstance(entry.get("sources"), list):
            for i, raw in enumerate(entry["sources"]):
                try:
                    entry["sources"][i] = parse_source(raw, base_dir)
                except ValueError as exc:
                    line = _line_of(root, ("models", name, "sources", i))
                    where = f"{path}:{line}" if line else str(path)
                    raise RegistryError(f"{where}: models.{name}.sources.{i}: {exc}.") from None
    return data, root


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RegistryError(f"{path}: no such models file; pass --models FILE or set LOCALPANEL_MODELS.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path}: cannot read the models file ({exc}).") from None


def load_registry(explicit: str | os.PathLike | None = None) -> Registry:
    """models.yaml: the file named by --models or LOCALPANEL_MODELS alone; else the shipped one with the user's
    ($LOCALPANEL_HOME/models.yaml) and ./models.yaml layered over it. `add` writes to the named file, else to
    the user's, so that what a user adds is found from any directory."""
    path = registry_path(explicit)
    if path is not None:
        registry = parse_layers([(_read_text(path), path)])
        registry.writable = path
        return registry
    layers = registry_layers()
    registry = parse_layers([(_read_text(p), p) for p in layers])
    registry.writable = user_registry_path()
    return registry


def model_entry_yaml(name: str, entry: dict, indent: int = 2) -> str:
    """A models.yaml block for one model, indented to sit under ``models:``."""
    body = yaml.safe_dump({name: entry}, sort_keys=False, allow_unicode=True, width=1000)
    pad = " " * indent
    return "".join(pad + line if line.strip() else line for line in body.splitlines(keepends=True))


def insert_model_entry(text: str, name: str, entry: dict) -> str:
    """Return models.yaml text with one more model appended to ``models:``, comments kept."""
    root = yaml.compose(text, Loader=yaml.SafeLoader) if text.strip() else None
    if root is None:
        return text + ("" if text.endswith("\n") or not text else "\n") + "models:\n" + model_entry_yaml(name, entry)
    if not isinstance(root, yaml.MappingNode):
        raise RegistryError("models.yaml must be a mapping at the top level; add the model by hand.")
    for key_node, value_node in root.value:
        if key_node.value != "models":
            continue
        if isinstance(value_node, yaml.ScalarNode) and value_node.value in ("", "~", "null"):
            at = value_node.end_mark.index
            return text[:at].rstrip(" ") + "\n" + model_entry_yaml(name, entry) + text[at:].lstrip(" ")
        if isinstance(value_node, yaml.MappingNode) and value_node.flow_style and not value_node.value:  # models: {}
            start, end = value_node.start_mark.index, value_node.end_mark.index
            return text[:start].rstrip(" ") + "\n" + model_entry_yaml(name, entry) + text[end:].lstrip(" \n")
        if not isinstance(value_node, yaml.MappingNode) or value_node.flow_style:
            raise RegistryError("models: in models.yaml is not a block mapping; add the model by hand.")
        indent = value_node.value[0][0].start_mark.column
        # Insert after the line holding the last scalar of the models block.
        node = value_node
        while isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.value:
            node = node.value[-1][1] if isinstance(node, yaml.MappingNode) else node.value[-1]
        if node.end_mark.column == 0:  # a block scalar ends at the start of the next line
            cut = node.end_mark.index
        else:
            newline = text.find("\n", node.end_mark.index)
            cut = len(text) if newline < 0 else newline + 1
        head = text[:cut] if text[:cut].endswith("\n") else text[:cut] + "\n"
        return head + model_entry_yaml(name, entry, indent) + text[cut:]
    return text + ("" if text.endswith("\n") else "\n") + "models:\n" + model_entry_yaml(name, entry)
