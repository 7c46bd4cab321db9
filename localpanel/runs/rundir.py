"""A run's directory: its manifest (what the run is), its journal (every finished turn, appended as it finishes, so
that nothing is lost to Ctrl-C or kill -9) and its transcript (written when the run ends); the lock that keeps
two writers apart, and finding a run by directory, id or 'last'."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

from pydantic import BaseModel, ValidationError

from localpanel.atomic import atomic_write_json, fsync_dir
from localpanel.errors import InputError, RunError, RunNotFound
from localpanel.panel.moderator import ModeratorReport
from localpanel.panel.protocol import Turn
from localpanel.runs.transcript import Manifest, Transcript

class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.manifest_path = self.path / "manifest.json"
        self.journal_path = self.path / "turns.jsonl"
        self.transcript_path = self.path / "transcript.json"

    @classmethod
    def create(cls, path: Path, manifest: Manifest) -> "RunDir":
        """Start a run in ``path`` (new, or an empty directory). Claimed atomically: of two runs given the same
        directory at once, one gets it and the other is told it is taken."""
        path = Path(path)
        taken = f"{path} already exists and is not empty; resume a run there with --resume {path} or choose another --run-dir."
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise InputError(taken)
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        try:
            run.journal_path.open("x").close()
        except FileExistsError:
            raise InputError(taken) from None
        run._start(manifest)
        return run

    @classmethod
    def create_unique(cls, parent: Path, name: str, manifest: Manifest) -> "RunDir":
        """Start a run in a new directory under ``parent`` named ``name``, or ``name-2``, ``name-3``... when
        another run (perhaps started in the same second) already took it. ``mkdir`` is the atomic claim."""
        parent.mkdir(parents=True, exist_ok=True)
        n = 1
        while True:
            path = parent / (name if n == 1 else f"{name}-{n}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                n += 1
        run = cls(path)
        run.journal_path.touch()
        run._start(manifest)
        return run

    def _start(self, manifest: Manifest) -> None:
        manifest.id = self.path.name
        atomic_write_json(self.manifest_path, manifest.model_dump(mode="json"))
        fsync_dir(self.path)

    @property
    def finished(self) -> bool:
        return self.transcript_path.is_file()

    def manifest(self) -> Manifest:
        return _load(Manifest, self.manifest_path, f"{self.path} is not a run directory (no manifest.json).")

    def append(self, kind: str, record: BaseModel) -> None:
        """Add one finished record to the journal, durably, before anything else happens."""
        line = json.dumps({"kind": kind, **record.model_dump(mode="json")}, ensure_ascii=False) + "\n"
        with open(self.journal_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def journal(self, repair: bool = False) -> tuple[list[Turn], ModeratorReport | None]:
        """The journaled turns (and moderator report).

        A torn last line (no newline: a crash mid-write) is left out, and cut off only with ``repair`` (by the
        process that resumes, holding the lock). Any other line that does not read is refused, naming the file
        and the line, and nothing is changed: the turns after it are somebody's saved work."""
        try:
            data = self.journal_path.read_bytes()
        except FileNotFoundError:
            return [], None
        turns: list[Turn] = []
        report = None
        good = 0
        for number, raw in enumerate(data.splitlines(keepends=True), 1):
            if not raw.endswith(b"\n"):
                break
            try:
                record = json.loads(raw)
                kind = record.pop("kind")
                if kind == "turn":
                    turns.append(Turn.model_validate(record))
                elif kind == "moderator":
                    report = ModeratorReport.model_validate(record)
                else:
                    raise ValueError(f"unknown record kind {kind!r}")
            except (ValueError, KeyError, AttributeError, ValidationError) as exc:
                raise RunError(
                    f"{self.journal_path} line {number} does not read as a turn ({_first(exc)}): it is damaged or was "
                    "written by another localpanel version; nothing was changed."
                ) from None
            good += len(raw)
        if good < len(data) and repair:
            with open(self.journal_path, "r+b") as f:
                f.truncate(good)
                os.fsync(f.fileno())
        return turns, report

    @contextlib.contextmanager
    def lock(self, shared: bool = False):
        """Hold the run: exclusively to write it (a run, a resume), shared to read it whole (a replay). A second
        process is told at once that the run is in use, rather than writing beside it."""
        try:
            f = open(self.journal_path, "rb")
        except FileNotFoundError:
            raise RunError(f"{self.path} is not a run directory (no turns.jsonl).") from None
        with f:
            try:
                fcntl.flock(f.fileno(), (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunError(
                    f"{self.path} is being written by another localpanel process; wait for it to finish (or stop it) and try again."
                ) from None
            try:
                yield self
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def write_transcript(self, transcript: Transcript) -> None:
        atomic_write_json(self.transcript_path, transcript.model_dump(mode="json"))

    def transcript(self) -> Transcript:
        missing = f"{self.path} has no transcript yet: the run did not finish; resume it with --resume."
        return _load(Transcript, self.transcript_path, missing)


def _load(kind: type[BaseModel], path: Path, missing: str):
    try:
        return kind.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(missing) from None
    except (OSError, ValidationError) as exc:
        raise RunError(f"{path} is damaged or from another localpanel version ({_first(exc)}).") from None


def _first(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def find_run(ref: str | Path, runs_dir: Path, ids_only: bool = False) -> RunDir:
    """A run given as a directory, a transcript.json, or an id (or unique id prefix) under the store's runs
    (``ids_only``: only the last, for callers that may read nothing but the store's runs)."""
    path = Path(ref)
    if not ids_only and path.is_file() and path.name == "transcript.json":
        return RunDir(path.parent)
    if not ids_only and path.is_dir():
        return RunDir(path)
    if runs_dir.is_dir():
        if ref == "last":
            runs = sorted(p for p in runs_dir.iterdir() if (p / "manifest.json").is_file())
            if runs:
                return RunDir(runs[-1])
        matches = sorted(p for p in runs_dir.iterdir() if p.name.startswith(str(ref)) and (p / "manifest.json").is_file())
        exact = [p for p in matches if p.name == str(ref)]
        matches = exact or matches
        if len(matches) == 1:
            return RunDir(matches[0])
        if len(matches) > 1:
            raise RunError(f"{ref!r} matches {len(matches)} runs in {runs_dir}; give more of the id.")
    raise RunNotFound(f"No run {str(ref)!r}: give a run directory, a transcript.json, or an id from `localpanel runs`.")


def weights_named_by_runs(roots: list[Path]) -> set[str]:
    """The sha256 of every weight a run under ``roots`` names (runs inside evals included): replay needs them."""
    named: set[str] = set()
    for root in roots:
        if root.is_dir():
            for manifest in root.rglob("manifest.json"):
                named |= {v for v in json_field(manifest, "sha256", {}).values() if isinstance(v, str)}
    return named


def json_field(path: Path, key: str, default):
    """A key of a JSON object file, or ``default`` when the file cannot be read as one (a damaged file names
    nothing; it never stops the reading of the rest)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get(key, default)
    except (OSError, ValueError, AttributeError):
        return default
    return value if isinstance(value, type(default)) else default
