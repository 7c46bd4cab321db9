"""llama.cpp contexts: one KV stream per participant of a group that shares a model, evaluated in batches.

``Context.step`` evaluates what several sequences ask for in one ``llama_decode``; a ``Sequence`` is one
participant's part of the cache and the text it stands for (the decoder's Evaluator). ``Stats`` counts where the
time goes, for the bench. The log of llama.cpp is kept here too, so that every error can quote it.
"""

from __future__ import annotations

import collections
import ctypes
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import llama_cpp as L
import numpy as np

from localpanel.engine.decoding import wants_logits
from localpanel.engine.runtime import RuntimeSettings
from localpanel.errors import ModelLoadError


class ModelHandle(Protocol):
    """What a context is made from (``llama_models.LoadedModel`` is one): declared here, so that this module,
    which llama_models builds on, never imports it back."""

    model: Any  # the llama_model pointer
    spec: Any  # its ModelSpec (for messages)
    vocab: Any  # its Vocab

_LOG: collections.deque[str] = collections.deque(maxlen=50)
_log_callback = None


def _init_llama() -> None:
    """Route llama.cpp's log into a buffer (shown with LOCALPANEL_DEBUG=1 and in load errors)."""
    global _log_callback
    if _log_callback is not None:
        return
    debug = bool(os.environ.get("LOCALPANEL_DEBUG"))

    def on_log(level, text, user_data):
        line = text.decode("utf-8", errors="replace") if text else ""
        _LOG.append(line)
        if debug:
            sys.stderr.write(line)

    _log_callback = L.llama_log_callback(on_log)  # keep a reference: llama.cpp calls it later
    L.llama_log_set(_log_callback, ctypes.c_void_p())
    L.llama_backend_init()


def _last_log_error() -> str:
    for line in reversed(_LOG):
        if any(word in line.lower() for word in ("error", "failed", "invalid", "unable")):
            return line.strip()
    return ""


class Sequence:
    """One participant's conversation in a context: the tokens in its part of the KV cache and the text they
    stand for. It is the decoder's Evaluator; its ``eval`` runs it alone."""

    def __init__(self, context: "Context", seq_id: int, n_ctx: int):
        self.context, self.seq_id, self.n_ctx = context, seq_id, n_ctx
        self.n_past = 0
        self.text = ""  # the conversation text whose tokens are in the cache (or pending)
        self.pending: list[int] = []  # tokens of that text not yet evaluated (the end of the last answer)
        self.turns: list[tuple[int, ...]] = []  # assistant turns this state contains
        self.dirty = False  # a turn was interrupted: the cache holds more than ``text`` says
        self.rows: list[np.ndarray] = []  # logits of the last evaluation, one row per requested output
        # Tokens of a prompt's opening copied in from another sequence (see ``copy_from``), instead of ``text``.
        self.held: list[int] | None = None
        # Evaluate a prompt (tokens asked for alone, the last one's logits wanted) in pieces that end at multiples of
        # this many positions, so that it is computed alike whether its opening was evaluated here or copied in.
        self.align: int | None = None

    def reset(self) -> None:
        L.llama_memory_seq_rm(self.context.mem, self.seq_id, -1, -1)
        self.n_past = 0
        self.text, self.pending, self.turns, self.dirty, self.held = "", [], [], False, None

    def copy_from(self, other: "Sequence") -> None:
        """Hold exactly what ``other`` holds. Each sequence has a KV stream of its own, so llama.cpp copies the
        whole stream, at the start of the next ``llama_decode``, before that batch is evaluated."""
        self.reset()
        L.llama_memory_seq_cp(self.context.mem, other.seq_id, self.seq_id, -1, -1)
        self.n_past, self.held = other.n_past, list(other.held or [])

    def eval(self, tokens: list[int], all_logits: bool = False) -> None:
        self.context.step([(self, tokens, all_logits)])

    def logits(self, i: int = -1) -> np.ndarray:
        return self.rows[i]

    def rollback(self, n_past: int) -> None:
        L.llama_memory_seq_rm(self.context.mem, self.seq_id, n_past, -1)
        self.n_past = n_past


class Context:
    """A llama.cpp context with one sequence per participant of a group that shares a model.

    Each sequence has its own KV stream (``kv_unified`` off), so what one participant computes never depends
    on where another's tokens sit in the cache. ``step`` evaluates what several sequences ask for in one
    ``llama_decode`` (split only by the batch size). How a batch is composed can change llama.cpp's results
    in the last bits, so callers compose it from the run's plan alone (see ``LlamaBackend._lockstep``).
    """

    def __init__(
        self, model: ModelHandle, n_ctx: int, settings: RuntimeSettings, threads: int, n_seq: int = 1,
        stats: "Stats | None" = None,
    ):
        params = L.llama_context_default_params()
        params.n_ctx = n_ctx * n_seq
        params.n_batch = params.n_ubatch = settings.batch_size
        params.n_seq_max = n_seq
        params.kv_unified = False
        params.n_threads = params.n_threads_batch = threads
        params.swa_full = True  # sliding-window models (Gemma 3) must keep the full cache to reuse prefixes
        params.no_perf = True
        self.ctx = L.llama_init_from_model(model.model, params)
        if not self.ctx:
            raise ModelLoadError(
                f"llama.cpp could not create a {n_ctx}-token context for {n_seq} sequence(s) of {model.spec.name!r} "
                f"(too little memory?) {_last_log_error()}".strip()
            )
        self.mem = L.llama_get_memory(self.ctx)
        self.n_ctx = n_ctx  # per sequence
        self.n_vocab = model.vocab.n
        self.batch_size = settings.batch_size
        self.batch = L.llama_batch_init(settings.batch_size, 0, 1)
        self.seqs = [Sequence(self, i, n_ctx) for i in range(n_seq)]
        self.stats = stats  # where the time goes, for the bench: llama_decode against everything else

    def step(self, work: list[tuple[Sequence, list[int], bool]]) -> None:
        """Evaluate each sequence's tokens, in the order given, in as few ``llama_decode`` calls as the batch size
        allows; afterwards each sequence's ``rows`` hold the logits it asked for (its last token's, or every
        token's with ``all_logits``). One sequence's prompt, when the sequence is aligned, goes in pieces that end
        at multiples of its ``align``: a piece's results then depend only on what came before it, whether that
        was evaluated in this sequence or copied in from another (llama.cpp's results depend on how a batch is
        cut, in the last bits)."""
        if len(work) == 1 and work[0][0].align and work[0][2] is False:
            seq, tokens, _ = work[0]
            cuts = [i for i in range(1, len(tokens)) if (seq.n_past + i) % seq.align == 0]
            for start, end in zip([0, *cuts], [*cuts, len(tokens)]):
                self._decode([(seq, tokens[start:end], False)])
            return
        self._decode(work)

    def _decode(self, work: list[tuple[Sequence, list[int], bool]]) -> None:
        for seq, tokens, _ in work:
            if seq.n_past + len(tokens) > seq.n_ctx:
                raise ContextFull(f"the conversation needs more than the {seq.n_ctx}-token context")
        flat = [
            (seq, tok, seq.n_past + i, wants_logits(all_logits, i, len(tokens)))
            for seq, tokens, all_logits in work
            for i, tok in enumerate(tokens)
        ]
        for seq, _, _ in work:
            seq.rows = []
        b = self.batch
        for start in range(0, len(flat), self.batch_size):
            chunk = flat[start : start + self.batch_size]
            b.n_tokens = len(chunk)
            for i, (seq, tok, pos, out) in enumerate(chunk):
                b.token[i] = tok
                b.pos[i] = pos
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = seq.seq_id
                b.logits[i] = out
            t0 = time.perf_counter()
            rc = L.llama_decode(self.ctx, b)
            if self.stats is not None:
                self.stats.add_decode(time.perf_counter() - t0, len(work), len(chunk))
            if rc != 0:
                raise ContextFull(f"llama_decode failed (status {rc}) {_last_log_error()}".strip())
            for i, (seq, _, _, out) in enumerate(chunk):
                if out:
                    ptr = L.llama_get_logits_ith(self.ctx, i)
                    seq.rows.append(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy())
        for seq, tokens, _ in work:
            seq.n_past += len(tokens)

    def close(self) -> None:
        if self.ctx:
            L.llama_batch_free(self.batch)
            L.llama_free(self.ctx)
            self.ctx = None


class ContextFull(Exception):
    pass


@dataclass
class Stats:
    """Counters of one backend's work: time inside llama_decode (by how many sequences shared the call and
    how many tokens it held) and time running the decoders (sampling, grammar, bookkeeping)."""

    decode_seconds: float = 0.0
    decode_calls: int = 0
    tokens: int = 0
    host_seconds: float = 0.0
    by_width: dict[int, list[float]] = field(default_factory=dict)  # sequences -> [calls, tokens, seconds]

    def add_decode(self, seconds: float, width: int, tokens: int) -> None:
        self.decode_seconds += seconds
        self.decode_calls += 1
        self.tokens += tokens
        row = self.by_width.setdefault(width, [0, 0, 0.0])
        row[0] += 1
        row[1] += tokens
        row[2] += seconds

    def as_dict(self) -> dict:
        return {
            "decode_seconds": round(self.decode_seconds, 3), "decode_calls": self.decode_calls, "tokens": self.tokens,
            "host_seconds": round(self.host_seconds, 3),
            "by_width": {k: {"calls": c, "tokens": t, "seconds": round(x, 3)} for k, (c, t, x) in sorted(self.by_width.items())},
        }
