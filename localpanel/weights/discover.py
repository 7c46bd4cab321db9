"""GGUF weights already on this machine: in Ollama, in LM Studio, in the Hugging Face cache, or a file anywhere.

Only files are read: Ollama is never started or called. Where a tool already names a file by its sha256
(Ollama's blobs, the Hub cache's LFS blobs) that digest is reported without hashing; `add` still verifies it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from localpanel.errors import GGUFError, InputError
from localpanel.weights.gguf import read_gguf

OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
OLLAMA_REGISTRY = "registry.ollama.ai"
_SHA = re.compile(r"[0-9a-f]{64}")


@dataclass
class Found:
    """A GGUF found on disk, with what it takes to add it to models.yaml."""

    where: str  # "ollama", "lm studio", "hf cache"
    label: str  # how that tool names it
    path: Path
    size: int
    sha256: str | None  # known without hashing, when the tool names the file by it
    architecture: str | None = None
    parameters: int | None = None
    add: str = ""  # the exact command that adds it
    problem: str | None = None  # why it cannot be used (not a GGUF, truncated)

    def as_dict(self) -> dict:
        return {**self.__dict__, "path": str(self.path)}


# -- where the tools keep their files -------------------------------------------------------------------


def ollama_root() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")


def lmstudio_root() -> Path:
    return Path.home() / ".lmstudio" / "models"


def hf_cache_root() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home) / "hub"


# -- Ollama ---------------------------------------------------------------------------------------------


@dataclass
class OllamaModel:
    ref: str  # NAME:TAG as `ollama run` takes it
    blob: Path
    sha256: str
    size: int | None


def _ollama_manifest_path(root: Path, ref: str) -> tuple[Path, str]:
    """manifests/HOST/NAMESPACE/NAME/TAG for 'name', 'name:tag', 'namespace/name:tag' or 'host/namespace/name:tag'."""
    name, _, tag = ref.partition(":")
    parts = [p for p in name.split("/") if p]
    if not parts or len(parts) > 3 or any(p in (".", "..") for p in parts) or "/" in tag or tag in (".", ".."):
        raise InputError(f"{ref!r} is not an Ollama model name; write it as NAME[:TAG], e.g. ollama://llama3.2:3b.")
    if len(parts) == 1:
        parts = [OLLAMA_REGISTRY, "library", parts[0]]
    elif len(parts) == 2:
        parts = [OLLAMA_REGISTRY, *parts]
    tag = tag or "latest"
    return root.joinpath("manifests", *parts, tag), f"{name}:{tag}"


def ollama_model(ref: str, root: Path | None = None) -> OllamaModel:
    """The GGUF blob that Ollama's manifest for ``ref`` names (read from Ollama's files only)."""
    root = root or ollama_root()
    path, full = _ollama_manifest_path(root, ref)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"Ollama has no model {full!r} in {root} (no {path}); `ollama pull` it first, or set OLLAMA_MODELS.") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"Ollama's manifest {path} is unreadable ({exc}).") from None
    layers = [layer for layer in manifest.get("layers", []) if layer.get("mediaType") == OLLAMA_MODEL_LAYER]
    if not layers:
        raise InputError(f"Ollama's manifest for {full!r} has no model layer ({OLLAMA_MODEL_LAYER}).")
    digest = str(layers[0].get("digest", ""))
    algo, _, hexdigest = digest.partition(":")
    if algo != "sha256" or not _SHA.fullmatch(hexdigest):
        raise InputError(f"Ollama's manifest for {full!r} names its model layer {digest!r}, not a sha256 digest.")
    blob = root / "blobs" / f"sha256-{hexdigest}"
    if not blob.is_file():
        raise InputError(f"Ollama's blob for {full!r} is missing ({blob}); `ollama pull {full}` again.")
    return OllamaModel(full, blob, hexdigest, layers[0].get("size"))


def scan_ollama(root: Path | None = None) -> list[Found]:
    root = root or ollama_root()
    base = root / "manifests"
    found = []
    if not base.is_dir():
        return found
    for manifest in sorted(p for p in base.rglob("*") if p.is_file()):
        parts = manifest.relative_to(base).parts
        if len(parts) != 4:
            continue
        host, namespace, name, tag = parts
        ref = (f"{name}:{tag}" if namespace == "library" else f"{namespace}/{name}:{tag}") if host == OLLAMA_REGISTRY else f"{host}/{namespace}/{name}:{tag}"
        try:
            model = ollama_model(ref, root)
        except InputError:
            continue  # not a model with a GGUF layer (an adapter, a broken pull): nothing to add
        found.append(_describe("ollama", model.ref, model.blob, model.sha256, f"localpanel add ollama://{model.ref}"))
    return found


# -- LM Studio and the Hub cache ------------------------------------------------------------------------


def scan_lmstudio(root: Path | None = None) -> list[Found]:
    """LM Studio keeps MODELS/PUBLISHER/REPO/*.gguf."""
    root = root or lmstudio_root()
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.glob("*/*/*.gguf")):
        publisher, repo = path.parent.parent.name, path.parent.name
        label = f"{publisher}/{repo}/{path.name}"
        found.append(_describe("lm studio", label, path, None, f"localpanel add {_quote(str(path))}"))
    return found


def scan_hf_cache(root: Path | None = None) -> list[Found]:
    """The Hub cache keeps models--OWNER--REPO/snapshots/REVISION/PATH, each a link to blobs/SHA256 for LFS files."""
    root = root or hf_cache_root()
    if not root.is_dir():
        return []
    found = []
    for repo_dir in sorted(root.glob("models--*")):
        repo = repo_dir.name[len("models--"):].replace("--", "/")
        for snapshot in sorted((repo_dir / "snapshots").glob("*")):
            for path in sorted(snapshot.rglob("*.gguf")):
                filename = path.relative_to(snapshot).as_posix()
                target = path.resolve()
                sha = target.name if _SHA.fullmatch(target.name) else None
                uri = f"hf://{repo}/{filename}@{snapshot.name}"
                found.append(_describe("hf cache", f"{repo}/{filename}@{snapshot.name[:10]}", path, sha, f"localpanel add {uri}"))
    return found


def scan(ollama: Path | None = None, lmstudio: Path | None = None, hf_cache: Path | None = None) -> list[Found]:
    """Every GGUF the three tools keep on this machine."""
    return scan_ollama(ollama) + scan_lmstudio(lmstudio) + scan_hf_cache(hf_cache)


def _describe(where: str, label: str, path: Path, sha256: str | None, add: str) -> Found:
    size = path.stat().st_size
    item = Found(where, label, path, size, sha256, add=add)
    try:
        info = read_gguf(path)
        item.architecture, item.parameters = info.architecture, info.parameters
    except GGUFError as exc:
        item.problem = str(exc)
    return item


def _quote(text: str) -> str:
    return text if re.fullmatch(r"[\w@%+=:,./-]+", text) else "'" + text.replace("'", "'\\''") + "'"


def size_label(parameters: int | None) -> str:
    if not parameters:
        return "?"
    return f"{parameters / 1e9:.1f}B" if parameters >= 1e9 else f"{parameters / 1e6:.0f}M"
