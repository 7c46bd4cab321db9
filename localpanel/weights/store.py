"""The model store: weights kept by sha256, verified once, fetched from their sources in order.

Layout under ``$LOCALPANEL_HOME`` (default: the user data dir, e.g. ~/.local/share/localpanel)::

    models/<sha256>.gguf            the weights
    models/<sha256>.gguf.verified   size and mtime at the last full hash: no re-hash on every run
    pins.json                       sha256 recorded on first download of models that models.yaml leaves unpinned
    runs/                           saved polls and debates
    tmp/                            downloads in progress (same file system, so the final rename is atomic)
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from localpanel.atomic import atomic_write_json, atomic_write_text
from localpanel.errors import ChecksumMismatch, GGUFError, InputError, NotPulledError, StoreError
from localpanel.weights.discover import ollama_model
from localpanel.weights.gguf import read_gguf
from localpanel.weights.paths import default_home  # noqa: F401  (re-exported: `from localpanel.weights.store import default_home` keeps working)
from localpanel.weights.registry import (
    NAME_RE,
    FileSource,
    HFSource,
    ModelSpec,
    Registry,
    insert_model_entry,
    parse_layers,
    parse_source,
    registry_layers,
    shipped_registry_path,
    user_registry_path,
)
from localpanel.weights.sources import Fetched, Progress, SourceError, fetch, sha256_file


@dataclass
class ModelStatus:
    spec: ModelSpec
    sha256: str | None
    pinned: str  # "models.yaml", "locally" (pins.json) or "no"
    present: bool
    verified: bool
    path: Path | None
    size: int | None

    def as_dict(self) -> dict:
        return {
            "name": self.spec.name,
            "sha256": self.sha256,
            "size": self.size,
            "pinned": self.pinned,
            "present": self.present,
            "verified": self.verified,
            "path": str(self.path) if self.path else None,
            "license": self.spec.license,
            "description": self.spec.description,
            "sources": [s.uri for s in self.spec.sources],
        }


@dataclass
class PullOutcome:
    name: str
    action: str  # "present" (nothing to do), "verified" (re-hashed), "fetched"
    path: Path
    sha256: str
    source: str | None = None


class Store:
    """The weights on this machine, pinned by sha256, and the runs saved beside them ($LOCALPANEL_HOME)."""

    def __init__(self, home: Path | None = None, progress: Progress | None = None, on_rehash=None):
        self.home = Path(home) if home else default_home()
        # Told when weights must be hashed again before a run (their verified mark is stale: a multi-GB read).
        self.progress, self.on_rehash = progress, on_rehash
        self.models_dir = self.home / "models"
        self.tmp_dir = self.home / "tmp"
        self.runs_dir = self.home / "runs"
        self.pins_path = self.home / "pins.json"

    # -- where things are ------------------------------------------------------------------------

    def blob(self, sha256: str) -> Path:
        return self.models_dir / f"{sha256}.gguf"

    def _marker(self, sha256: str) -> Path:
        return self.models_dir / f"{sha256}.gguf.verified"

    def pins(self) -> dict[str, dict]:
        try:
            return json.loads(self.pins_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self.pins_path} is unreadable ({exc}); delete it to re-pin on the next pull.") from None

    def _local_pin(self, spec: ModelSpec) -> dict | None:
        pin = self.pins().get(spec.name)
        # A pin only holds for the sources it was made from.
        if pin and pin.get("sources") == [s.uri for s in spec.sources]:
            return pin
        return None

    def expected_sha(self, spec: ModelSpec) -> tuple[str | None, str]:
        if spec.sha256:
            return spec.sha256, "models.yaml"
        pin = self._local_pin(spec)
        return (pin["sha256"], "locally") if pin else (None, "no")

    # -- verification ------------------------------------------------------------------------------

    def _marker_ok(self, sha256: str) -> bool:
        try:
            mark = json.loads(self._marker(sha256).read_text())
            st = self.blob(sha256).stat()
        except (OSError, ValueError):
            return False
        return mark.get("size") == st.st_size and mark.get("mtime_ns") == st.st_mtime_ns and mark.get("sha256") == sha256

    def _write_marker(self, sha256: str) -> None:
        st = self.blob(sha256).stat()
        atomic_write_json(
            self._marker(sha256),
            {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "verified_at": time.time()},
        )

    def status(self, spec: ModelSpec) -> ModelStatus:
        sha, pinned = self.expected_sha(spec)
        path = self.blob(sha) if sha else None
        present = bool(path and path.is_file())
        size = spec.size
        if size is None and pinned == "locally":
            size = self._local_pin(spec).get("size")
        return ModelStatus(spec, sha, pinned, present, present and self._marker_ok(sha), path if present else None, size)

    def verify(self, spec: ModelSpec, progress: Progress | None = None) -> bool:
        """Re-hash a present model; a bad file is deleted (so the next pull fetches it again)."""
        sha, _ = self.expected_sha(spec)
        return self._rehash(sha, spec.name, progress)

    def _rehash(self, sha: str, label: str, progress: Progress | None = None) -> bool:
        path = self.blob(sha)
        digest, _ = sha256_file(path, progress, f"{label} verifying")
        if digest != sha:
            path.unlink(missing_ok=True)
            self._marker(sha).unlink(missing_ok=True)
            return False
        self._write_marker(sha)
        return True

    def _rehash_before_use(self, sha256: str, name: str) -> bool:
        if self.on_rehash:
            self.on_rehash(name, self.blob(sha256).stat().st_size)
        return self._rehash(sha256, name, self.progress)

    def unreferenced(self, registry: Registry, in_use: set[str] = frozenset()) -> list[Path]:
        """Weights in the store that no model of ``registry`` and no local pin names, nor ``in_use`` (the sha256 the
        saved runs and evals name, which replay and resume need): what `prune` removes."""
        named = {spec.sha256 for spec in registry.models.values() if spec.sha256}
        named |= {pin.get("sha256") for pin in self.pins().values()}
        named |= set(in_use)
        if not self.models_dir.is_dir():
            return []
        return sorted(p for p in self.models_dir.glob("*.gguf") if p.stem not in named)

    ELSEWHERE = "elsewhere.txt"

    def remember_elsewhere(self, path: Path) -> None:
        """Note a run or eval directory made outside the store (--run-dir, --out-dir), so that `prune` keeps the
        weights it names. One line per directory, appended."""
        path = Path(path).resolve()
        if path.is_relative_to(self.home.resolve()):
            return
        self.home.mkdir(parents=True, exist_ok=True)
        if str(path) in self.elsewhere_lines():
            return
        with open(self.home / self.ELSEWHERE, "a", encoding="utf-8") as f:
            f.write(f"{path}\n")

    def elsewhere_lines(self) -> list[str]:
        try:
            return [x for x in (self.home / self.ELSEWHERE).read_text(encoding="utf-8").splitlines() if x.strip()]
        except OSError:
            return []

    def saved_roots(self, keep: list[Path] = ()) -> list[Path]:
        """Where saved runs and evals are: under runs/ and evals/, the directories made elsewhere that are still
        listed, and the directories ``keep``."""
        return [self.runs_dir, self.home / "evals", *(Path(x) for x in self.elsewhere_lines()), *map(Path, keep)]

    def remove(self, blob: Path) -> None:
        """Delete stored weights and their verified mark."""
        self._marker(blob.stem).unlink(missing_ok=True)
        blob.unlink(missing_ok=True)

    def path_for(self, spec: ModelSpec) -> Path:
        """The verified weights of a model, ready for llama.cpp; NotPulledError if they are not here."""
        sha, _ = self.expected_sha(spec)
        if sha is None:
            raise NotPulledError(f"Model {spec.name!r} is not pulled yet; run `localpanel pull {spec.name}`.")
        return self.verified_path(spec.name, sha)

    def verified_path(self, name: str, sha256: str) -> Path:
        """The weights with this sha256, checked against their verified marker (re-hashed if it is stale)."""
        path = self.blob(sha256)
        if not path.is_file():
            raise NotPulledError(f"Model {name!r} is not pulled yet (sha256 {sha256[:12]}…); run `localpanel pull {name}`.")
        if not self._marker_ok(sha256) and not self._rehash_before_use(sha256, name):
            raise NotPulledError(f"Model {name!r} was corrupt on disk and has been removed; run `localpanel pull {name}`.")
        return path

    # -- fetching ----------------------------------------------------------------------------------

    def pull(
        self, spec: ModelSpec, *, verify: bool = False, frozen: bool = False, progress: Progress | None = None
    ) -> PullOutcome:
        """Make a model present and verified: a no-op when it already is."""
        sha, pinned = self.expected_sha(spec)
        if sha and self.blob(sha).is_file():
            if self._marker_ok(sha) and not verify:
                return PullOutcome(spec.name, "present", self.blob(sha), sha)
            if self.verify(spec, progress):
                return PullOutcome(spec.name, "verified", self.blob(sha), sha)
        if frozen and pinned != "models.yaml":
            raise InputError(
                f"Model {spec.name!r} has no sha256 in models.yaml and --frozen refuses unpinned models; "
                "pin it (`localpanel add` records one) or drop --frozen."
            )
        fetched, source = self._fetch_first(spec, sha, progress)
        if not spec.sha256:
            self._record_pin(spec, fetched)
        return PullOutcome(spec.name, "fetched", self.blob(fetched.sha256), fetched.sha256, source)

    def _fetch_first(self, spec: ModelSpec, sha: str | None, progress: Progress | None) -> tuple[Fetched, str]:
        failures: list[str] = []
        mismatch = False
        for source in spec.sources:
            try:
                fetched = self.fetch_source(source, expect_sha=sha, expect_size=spec.size, progress=progress, label=spec.name)
                return fetched, source.uri
            except ChecksumMismatch as exc:
                mismatch = True
                failures.append(str(exc))
            except (SourceError, GGUFError) as exc:
                failures.append(str(exc))
        kind = ChecksumMismatch if mismatch and len(failures) == 1 else StoreError
        raise kind(f"Could not get model {spec.name!r}: " + "; ".join(failures) + ".")

    def fetch_source(
        self,
        source,
        *,
        expect_sha: str | None,
        expect_size: int | None = None,
        progress: Progress | None = None,
        label: str = "",
    ) -> Fetched:
        """Fetch one source into the store: temp file, sha256 check, GGUF check, then an atomic rename."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp_dir / f"{uuid.uuid4().hex}.partial"
        try:
            fetched = fetch(source, tmp, self.tmp_dir, total=expect_size, progress=progress, label=label)
            if expect_sha and fetched.sha256 != expect_sha:
                raise ChecksumMismatch(
                    f"{source.uri} gave sha256 {fetched.sha256[:12]}… ({fetched.size} bytes), "
                    f"not the pinned {expect_sha[:12]}…"
                )
            if expect_size is not None and fetched.size != expect_size:
                raise ChecksumMismatch(f"{source.uri} gave {fetched.size} bytes, not the pinned {expect_size}")
            read_gguf(tmp)
            os.replace(tmp, self.blob(fetched.sha256))
            self._write_marker(fetched.sha256)
            return fetched
        finally:
            tmp.unlink(missing_ok=True)

    def _record_pin(self, spec: ModelSpec, fetched: Fetched) -> None:
        pins = self.pins()
        pins[spec.name] = {
            "sha256": fetched.sha256,
            "size": fetched.size,
            "sources": [s.uri for s in spec.sources],
            "resolved": fetched.resolved,
            "pinned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write_json(self.pins_path, pins)



@dataclass
class Added:
    """What `localpanel add` did: the entry it pinned, or the entry that already pinned these bytes."""

    name: str
    entry: dict
    target: Path | None  # the models.yaml written; None when the bytes were pinned already
    linked: bool  # the store hard-links the file rather than holding a copy
    already: bool = False


def add_model(store: Store, registry: Registry, ref: str, name: str | None = None,
              progress: Progress | None = None) -> Added:
    """Pin a model in models.yaml and put its bytes in the store, from any of:

    - ``hf://OWNER/REPO/FILE.gguf[@REVISION]``: fetched (or taken from the HF cache), pinned with its commit;
    - ``ollama://NAME[:TAG]``: the blob Ollama's manifest names, checked against the sha256 it is named by;
    - a path to a ``.gguf`` file (or ``file://PATH``): hashed once and checked as a GGUF.

    Local bytes are hard-linked into the store where the file system allows it, copied otherwise. Bytes that
    models.yaml already pins are not pinned twice. When the registry in use is the one shipped with
    localpanel, a copy of it in the current directory gets the entry instead.
    """
    expect_sha = None
    description = None
    if ref.startswith("hf://"):
        try:
            fields = parse_source(ref)
        except ValueError as exc:
            raise InputError(f"{exc}.") from None
        if fields["kind"] != "hf" or not fields["filename"].endswith(".gguf"):
            raise InputError(f"{ref!r} is not hf://OWNER/REPO/FILE.gguf[@REVISION].")
        source = HFSource(**fields)
        stem = Path(source.filename).name[: -len(".gguf")]
    elif ref.startswith("ollama://"):
        model = ollama_model(ref[len("ollama://"):])
        source, expect_sha = FileSource(path=model.blob), model.sha256
        stem, description = model.ref.replace(":", "-").replace("/", "-"), f"{model.ref} (from Ollama)"
    else:
        path = Path(ref[len("file://"):] if ref.startswith("file://") else ref).expanduser()
        if not path.is_file():
            raise InputError(f"No file {str(path)!r}: give a .gguf file, hf://OWNER/REPO/FILE.gguf or ollama://NAME:TAG.")
        try:
            read_gguf(path)  # before hashing gigabytes, and so that the error names the user's file
        except GGUFError as exc:
            raise InputError(f"{exc} Nothing was added.") from None
        source = FileSource(path=path.resolve())
        stem = path.name[: -len(".gguf")] if path.name.lower().endswith(".gguf") else path.name
    if name is None:
        name = "".join(c if c.isalnum() or c in "._-" else "-" for c in stem.lower()).strip("-._") or "model"
    if not NAME_RE.match(name):
        raise InputError(f"{name!r} is not a valid model name (letters, digits, '.', '_', '-').")
    if isinstance(source, HFSource) and name in registry.models:  # before downloading anything
        raise InputError(f"Model {name!r} is already in {registry.origins.get('models.' + name, registry.path)}; pass --name to choose another name.")

    try:
        fetched = store.fetch_source(source, expect_sha=expect_sha, progress=progress, label=name)
    except ChecksumMismatch as exc:
        if ref.startswith("ollama://"):
            raise ChecksumMismatch(
                f"Ollama's blob {source.path} does not match the sha256 it is named by ({exc}); it is damaged: "
                f"`ollama pull {ref[len('ollama://'):]}` again. Nothing was added."
            ) from None
        raise
    pinned = [n for n, m in registry.models.items() if m.sha256 == fetched.sha256]
    if pinned:
        return Added(pinned[0], {"sha256": fetched.sha256, "size": fetched.size}, None, fetched.linked, already=True)
    if name in registry.models:
        raise InputError(f"Model {name!r} is already in {registry.origins.get('models.' + name, registry.path)} with other weights; pass --name to choose another name.")
    info = read_gguf(store.blob(fetched.sha256))
    entry: dict = {"sha256": fetched.sha256, "size": fetched.size}
    if info.license:
        entry["license"] = info.license
    if description or info.name:
        entry["description"] = description or info.name
    entry["sources"] = [fetched.resolved]

    target = registry.writable or user_registry_path()
    if target.resolve() == shipped_registry_path().resolve():
        raise InputError(f"{target} is the models.yaml that ships with localpanel; pass --models with a file of your own.")
    text = target.read_text(encoding="utf-8") if target.is_file() else (
        "# Models you added with `localpanel add`, layered over the ones localpanel ships.\nmodels:\n")
    new_text = insert_model_entry(text, name, entry)
    layers = [(p.read_text(encoding="utf-8"), p) for p in registry_layers() if p.resolve() != target.resolve()] \
        if registry.writable == user_registry_path() else []
    parse_layers([*layers, (new_text, target)])  # never write a models.yaml that would not load
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, new_text)
    return Added(name, entry, target, fetched.linked)
