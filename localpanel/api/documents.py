"""Context files (--context): documents every seat reads before the question.

Read and checked before anything is written (missing, unreadable, empty or binary: one sentence each); hashed into
the manifest with their size; cut, later documents first, when the whole does not fit the smallest seat's context
with room for the run's ballots (the card says how much was read); read again and checked by sha256 on resume and
replay, which refuse a changed or missing file and name it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from localpanel.engine.runtime import Backend
from localpanel.errors import ContextOverflowError, InputError, RunError
from localpanel.panel.prompts import context_block
from localpanel.panel.protocol import DebateSettings, Question, Rounds, Seat
from localpanel.runs.transcript import DocumentRecord

MAX_CONTEXT_BYTES = 16 * 2**20  # a context file is read whole: more than this is not a document for a ballot


def read_documents(paths: list[Path]) -> list[tuple[DocumentRecord, str]]:
    """Each context file with its record, or the one sentence that says what is wrong with it."""
    out = []
    for path in paths:
        path = Path(path).expanduser()
        if not path.is_file():
            raise InputError(f"No context file {str(path)!r}: give the path of a text file.")
        try:
            data = path.read_bytes() if path.stat().st_size <= MAX_CONTEXT_BYTES else None
        except OSError as exc:
            raise InputError(f"Could not read the context file {str(path)!r} ({exc.strerror or exc}).") from None
        if data is None:
            raise InputError(f"The context file {str(path)!r} is over {MAX_CONTEXT_BYTES // 2**20} MiB; give a text "
                             "document, or the part of it the question needs.")
        text = _text(path, data)
        out.append((DocumentRecord(path=str(path.resolve()), name=path.name, sha256=hashlib.sha256(data).hexdigest(),
                                   size=len(data), chars=len(text), read=len(text)), text))
    return out


def _text(path: Path, data: bytes) -> str:
    if b"\x00" in data:
        raise InputError(f"The context file {str(path)!r} is binary, not text; give a text file (convert a PDF or "
                         "a document to text first).")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"The context file {str(path)!r} is not UTF-8 text; save it as UTF-8.") from None
    if not text.strip():
        raise InputError(f"The context file {str(path)!r} is empty; give a file with text in it.")
    return text


def fit(question: Question, docs: list[tuple[DocumentRecord, str]], seats: list[Seat], settings: DebateSettings,
        backend: Backend) -> tuple[Question, list[DocumentRecord]]:
    """The question with its documents as every seat can read them: whole if they fit each seat's context with
    the run's ballots, else cut from the end (the last document first) to the most that fits."""
    if not docs:
        return question, []
    total = sum(len(text) for _, text in docs)

    def cut(keep: int) -> tuple[Question, list[DocumentRecord]]:
        records, parts = [], []
        for record, text in docs:
            n = max(0, min(len(text), keep))
            keep -= n
            records.append(record.model_copy(update={"read": n}))
            if n:
                parts.append((record.name, text[:n] + ("\n[... cut here to fit the context ...]" if n < len(text) else "")))
        return question.model_copy(update={"context": context_block(parts)}), records

    def fits(keep: int) -> bool:
        q, _ = cut(keep)
        rounds = Rounds(q, seats, settings, backend)
        try:
            rounds.check_fits(extra=rounds.context_growth() - settings.max_tokens)
        except ContextOverflowError:
            return False
        return True

    if fits(total):
        return cut(total)
    lo, hi = 0, total  # the most characters that fit lies in [lo, hi)
    while hi - lo > max(64, total // 256):
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    if lo < 200:
        raise InputError(f"The context files leave no room for the ballots: at most {lo} of their {total} characters "
                         "fit the smallest seat's context with the run's ballots; give a shorter document, fewer "
                         "rounds or a smaller --max-tokens, or a larger --ctx-size.")
    return cut(lo)


def reread(records: list[DocumentRecord], where: Path) -> str:
    """A run's documents read again as its seats read them, checked by sha256 (RunError names a changed or missing
    file)."""
    parts = []
    for r in records:
        path = Path(r.path)
        try:
            data = path.read_bytes()
        except OSError:
            raise RunError(f"{where} was made with the context file {r.path}, which is missing; put it back "
                           "as it was to resume or replay the run.") from None
        if hashlib.sha256(data).hexdigest() != r.sha256:
            raise RunError(f"The context file {r.path} has changed since {where} was made (sha256 "
                           f"{r.sha256[:12]}…); put it back as it was to resume or replay the run.")
        text = data.decode("utf-8")
        if r.read:
            parts.append((r.name, text[: r.read] + ("\n[... cut here to fit the context ...]" if r.read < r.chars else "")))
    return context_block(parts)
