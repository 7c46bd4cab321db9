"""The llama.cpp backend: loads each GGUF once, keeps one KV state per participant, decodes under the ballot plan.

Participants that share a model and are asked together (a round's requests) share one llama.cpp context,
with a sequence each: their new prompt tokens are evaluated in one batch, and their ballots are decoded in
lockstep, one ``llama_decode`` per step for all of them, until each one closes. Each turn's prompt extends
the participant's previous prompt and answer, so only the new part is evaluated.

What keeps a run, its resume and its replay identical: a batch is composed from the requests alone (their
order, and the tokens each one needs at each step), never from timing. When a state is lost (a resumed run,
a model unloaded to respect --max-memory) the group's earlier rounds are evaluated again in the same
lockstep, with the recorded tokens forced, and a turn the journal already holds is decoded forced beside the
ones still to run. With ``RuntimeSettings.batch_sequences`` off, each request runs alone, as it always did.
"""

from __future__ import annotations

import collections
import ctypes
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import llama_cpp as L
import numpy as np

from . import __version__
from .decoding import ReplayMismatch, Rotations, common_prefix, decode_steps, wants_logits
from .errors import ModelLoadError
from .gguf import read_gguf
from .grammar import compile_schema
from .prompting import PromptFormat, prompt_format
from .registry import ModelSpec
from .runtime import (
    DoneCallback, Generation, GenerationRequest, Message, RuntimeSettings, TokenCallback, physical_cores,
)
from .vocab import Vocab

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

    def reset(self) -> None:
        L.llama_memory_seq_rm(self.context.mem, self.seq_id, -1, -1)
        self.n_past = 0
        self.text, self.pending, self.turns, self.dirty = "", [], [], False

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
        self, model: "LoadedModel", n_ctx: int, settings: RuntimeSettings, threads: int, n_seq: int = 1,
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
        token's with ``all_logits``)."""
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


@dataclass
class LoadedModel:
    spec: ModelSpec
    path: Path
    model: object
    vocab: Vocab
    fmt: PromptFormat
    n_ctx_train: int
    size: int
    contexts: dict[tuple[str, ...], Context] = field(default_factory=dict)  # by the keys of the group

    def close(self) -> None:
        for ctx in self.contexts.values():
            ctx.close()
        self.contexts.clear()
        if self.model:
            L.llama_model_free(self.model)
            self.model = None


_GGUF_INFO: dict[tuple, object] = {}


def _checked_gguf(path: Path):
    """The file's GGUF header, read once per file version: a malformed file would abort the process inside llama.cpp."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _GGUF_INFO:
        _GGUF_INFO[key] = read_gguf(path)
    return _GGUF_INFO[key]


def _load_model(spec: ModelSpec, path: Path, gpu_layers: int, vocab_only: bool = False) -> LoadedModel:
    info = _checked_gguf(path)
    _init_llama()
    params = L.llama_model_default_params()
    params.n_gpu_layers = gpu_layers if gpu_layers >= 0 else 999
    params.vocab_only = vocab_only
    model = L.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise ModelLoadError(f"llama.cpp could not load model {spec.name!r} from {path}. {_last_log_error()}".strip())
    vocab = Vocab(L.llama_model_get_vocab(model))
    fmt = prompt_format(spec, info.chat_template, vocab.bos_text, vocab.eos_text)
    return LoadedModel(spec, path, model, vocab, fmt, L.llama_model_n_ctx_train(model), path.stat().st_size)


class LlamaBackend:
    """Runs constrained generations on llama.cpp: seats that share a model decode together in one context."""

    def __init__(self, settings: RuntimeSettings | None = None):
        self.settings = settings or RuntimeSettings()
        self.threads = self.settings.threads or physical_cores()
        self.loaded: collections.OrderedDict[Path, LoadedModel] = collections.OrderedDict()
        self.vocab_only: dict[Path, LoadedModel] = {}
        self.model_loads = 0
        self.stats = Stats()

    # -- models ------------------------------------------------------------------------------------

    def _model(self, spec: ModelSpec, path: Path) -> LoadedModel:
        lm = self.loaded.get(path)
        if lm is not None:
            self.loaded.move_to_end(path)
            return lm
        self._make_room(path.stat().st_size)
        gpu = spec.gpu_layers if spec.gpu_layers is not None else self.settings.gpu_layers
        lm = _load_model(spec, path, gpu)
        self.model_loads += 1
        self.loaded[path] = lm
        counted = self.vocab_only.pop(path, None)
        if counted is not None:  # its vocabulary tables are already built: keep them, free the rest
            lm.vocab.adopt(counted.vocab)
            counted.close()
        return lm

    def _make_room(self, size: int) -> None:
        """Unload least recently used models until ``size`` more bytes fit under --max-memory."""
        limit = self.settings.max_memory
        while limit and self.loaded and sum(m.size for m in self.loaded.values()) + size > limit:
            _, old = self.loaded.popitem(last=False)
            old.close()

    def _vocab_model(self, spec: ModelSpec, path: Path) -> LoadedModel:
        """A model to count tokens with: the loaded model, else its vocabulary alone (kept until the model
        loads and takes over its tables), so that counting never loads weights or evicts a model. A run
        counts its prompts once the model is loaded; only a fit check near the limit loads a vocabulary."""
        lm = self.loaded.get(path) or self.vocab_only.get(path)
        if lm is None:
            lm = self.vocab_only[path] = _load_model(spec, path, 0, vocab_only=True)
        return lm

    def context_length(self, model: ModelSpec, model_path: Path) -> int:
        trained = _checked_gguf(model_path).context_length  # what llama.cpp reads as n_ctx_train: no load needed
        limits = [self.settings.context_length, trained or self.settings.context_length]
        if model.context_length:
            limits.append(model.context_length)
        return min(limits)

    def count_tokens(self, model: ModelSpec, model_path: Path, messages: list[Message]) -> int:
        lm = self._vocab_model(model, model_path)
        return len(lm.vocab.prompt_tokens(lm.fmt.render(self._clean(lm, messages))))

    def token_bound(self, model: ModelSpec, model_path: Path, messages: list[Message]) -> int:
        """An upper bound on ``count_tokens`` from the GGUF header alone, so that checking that an ordinary prompt
        fits loads nothing (loading a 262k-token vocabulary takes half a second). A token is at least one byte
        of the rendered prompt (BPE pieces, SentencePiece pieces and byte fallback alike; a special token's
        text is longer than one byte), plus a BOS and a leading space the tokenizer may add; breaking up
        control-token texts in untrusted text adds 3 bytes per match of 2 or more bytes."""
        if model_path in self.loaded or model_path in self.vocab_only:
            return self.count_tokens(model, model_path, messages)
        fmt = prompt_format(model, _checked_gguf(model_path).chat_template, "<s>", "</s>")
        rendered = len(fmt.render(messages).encode("utf-8"))
        untrusted = sum(len(m.content.encode("utf-8")) for m in messages if m.role != "assistant")
        return rendered + (3 * untrusted) // 2 + 2

    # -- generation --------------------------------------------------------------------------------

    def _clean(self, lm: LoadedModel, messages: list[Message]) -> list[Message]:
        # Untrusted text (the question, other participants' rationales) must not smuggle in control tokens.
        clean = lm.vocab.neutralize
        return [
            m if m.role == "assistant" else m.model_copy(update={
                "content": clean(m.content), "variants": [clean(v) for v in m.variants] if m.variants else None,
            })
            for m in messages
        ]

    def _context(self, lm: LoadedModel, keys: tuple[str, ...], hints: list[int | None]) -> Context:
        """The group's context: a sequence per key, each as large as the largest need (KV memory grows with it).

        Its size follows from the requests alone: a context of another size is made anew, never reused, because
        the KV size can change llama.cpp's results in the last bits, and a reused one would make a question's
        ballots depend on which questions ran before it (on another Ray worker, in another order)."""
        window = self.context_length(lm.spec, lm.path)
        n_ctx = max(min(window, max(512, -(-hint // 256) * 256)) if hint else window for hint in hints)
        ctx = lm.contexts.get(keys)
        if ctx is not None and ctx.n_ctx != n_ctx:
            ctx.close()
            ctx = None
        if ctx is None:
            ctx = lm.contexts[keys] = Context(lm, n_ctx, self.settings, self.threads, n_seq=len(keys), stats=self.stats)
        return ctx

    def generate(self, request: GenerationRequest, on_token: TokenCallback | None = None) -> Generation:
        out: list[Generation] = []
        self.generate_many([request], (lambda i, n: on_token(n)) if on_token else None, lambda i, g: out.append(g))
        return out[0]

    def generate_many(
        self,
        requests: list[GenerationRequest],
        on_token: Callable[[int, int], None] | None = None,
        on_done: DoneCallback | None = None,
    ) -> list[Generation | None]:
        """Run independent requests; those on one model run together. ``on_done(i, generation)`` is called as
        each one finishes (requests with ``replay`` are decoded as recorded, and not reported)."""
        results: list[Generation | None] = [None] * len(requests)
        groups: dict[object, list[int]] = {}
        for i, r in enumerate(requests):
            if self.settings.batch_sequences:
                groups.setdefault(r.model_path, []).append(i)
            elif r.replay is None:  # one at a time: a recorded turn's state is rebuilt when next needed
                groups[i] = [i]
        for idxs in groups.values():
            group = [requests[i] for i in idxs]
            if len({r.key for r in group}) < len(group):
                raise ValueError("two requests of one batch share a conversation key")

            def done(j: int, g: Generation, idxs=idxs) -> None:
                results[idxs[j]] = g
                if on_done and requests[idxs[j]].replay is None:
                    on_done(idxs[j], g)

            tokens = (lambda j, n, idxs=idxs: on_token(idxs[j], n)) if on_token else None
            self._run_group(group, tokens, done)
        return results

    def _run_group(self, group: list[GenerationRequest], on_token, on_done: DoneCallback) -> None:
        lm = self._model(group[0].model, group[0].model_path)
        hints = [self.count_tokens(r.model, r.model_path, r.context_base) + r.context_extra if r.context_base else None
                 for r in group]
        ctx = self._context(lm, tuple(r.key for r in group), hints)
        conversations = [self._clean(lm, r.messages) for r in group]
        started = time.perf_counter()
        rebuilt = self._sync(lm, ctx, conversations, group)
        rebuild_seconds = time.perf_counter() - started if rebuilt else 0.0

        def finish(j: int, g: Generation) -> None:
            g.rebuild_seconds = rebuild_seconds
            on_done(j, g)

        turns = [
            (seq, self._turn(lm, seq, messages, r, forced=r.replay,
                             on_token=(lambda n, j=j: on_token(j, n)) if on_token else None))
            for j, (seq, messages, r) in enumerate(zip(ctx.seqs, conversations, group))
        ]
        self._lockstep(ctx, turns, finish)

    def _sync(self, lm: LoadedModel, ctx: Context, conversations: list[list[Message]], group: list[GenerationRequest]) -> bool:
        """Make every sequence hold exactly the earlier turns of its conversation. If any does not, all are
        cleared and the earlier rounds evaluated again, round by round, in the same lockstep as first time."""
        earlier = [[(i, m) for i, m in enumerate(msgs) if m.role == "assistant"] for msgs in conversations]
        if all(
            not seq.dirty and seq.text and seq.turns == [tuple(m.tokens or ()) for _, m in turns][: len(seq.turns)]
            and len(seq.turns) == len(turns) and lm.fmt.render(msgs).startswith(seq.text)
            for seq, turns, msgs in zip(ctx.seqs, earlier, conversations)
        ) or not any(earlier):
            return False
        for seq in ctx.seqs:
            seq.reset()
        for k in range(max(len(turns) for turns in earlier)):
            steps = []
            for seq, turns, msgs, r in zip(ctx.seqs, earlier, conversations, group):
                if k >= len(turns):
                    continue
                i, m = turns[k]
                if m.tokens is None or m.schema_ is None:
                    raise ReplayMismatch("an earlier answer has no recorded tokens to rebuild the state from")
                past = r.model_copy(update={"messages": msgs[:i], "schema_": m.schema_})
                steps.append((seq, self._turn(lm, seq, msgs[:i], past, forced=list(m.tokens), on_token=None)))
            self._lockstep(ctx, steps, lambda j, g: None)
        return True

    def _lockstep(self, ctx: Context, turns: list[tuple[Sequence, object]], on_done: Callable[[int, Generation], None]) -> None:
        """Run turn coroutines side by side: first each one's prompt alone, in the order of ``turns``; then each
        step, every unfinished one's evaluation goes into one batch, in that order. The batches thus follow
        from what the turns need, and nothing else.

        Each turn is charged its own sampling time plus a share of each batch by the tokens it put in, so the
        turns' seconds add up to the wall time; ``prompt_seconds`` is its share of its first batch."""
        spent = [0.0] * len(turns)
        prompt: list[float | None] = [None] * len(turns)
        live: list[tuple[int, tuple[list[int], bool]]] = []  # (turn, the evaluation it asks for)

        def advance(j: int, first: bool = False, error: BaseException | None = None) -> None:
            coroutine = turns[j][1]
            t0 = time.perf_counter()
            try:
                want = next(coroutine) if first else coroutine.throw(error) if error else coroutine.send(None)
            except StopIteration as stop:
                spent[j] += time.perf_counter() - t0
                self.stats.host_seconds += time.perf_counter() - t0
                g: Generation = stop.value
                g.seconds, g.prompt_seconds = spent[j], prompt[j] or 0.0
                on_done(j, g)
                return
            spent[j] += time.perf_counter() - t0
            self.stats.host_seconds += time.perf_counter() - t0
            live.append((j, want))

        def run(batch: list[tuple[int, tuple[list[int], bool]]]) -> None:
            fits = [(j, w) for j, w in batch if turns[j][0].n_past + len(w[0]) <= turns[j][0].n_ctx]
            error = None
            t0 = time.perf_counter()
            if fits:
                try:
                    ctx.step([(turns[j][0], tokens, all_logits) for j, (tokens, all_logits) in fits])
                except ContextFull as exc:
                    error = exc
            dt = time.perf_counter() - t0
            total = sum(len(w[0]) for _, w in fits) or 1
            for j, (tokens, _) in fits:
                share = dt * len(tokens) / total
                spent[j] += share
                if prompt[j] is None:
                    prompt[j] = share
            fitted = {j for j, _ in fits}
            for j, _ in batch:
                full = ContextFull(f"the conversation needs more than the {turns[j][0].n_ctx}-token context")
                advance(j, error=error if j in fitted else full)

        for j in range(len(turns)):
            advance(j, first=True)
        # Each turn's first evaluation (its new prompt tokens) runs alone, in order, and that turn samples at
        # once: the first ballot token comes after one prompt instead of all of them. Prompts are matrix-matrix
        # work either way, so this costs no throughput; decoding steps then run together.
        opening = sorted(live)
        live.clear()
        for want in opening:
            run([want])
        while live:
            batch = sorted(live)
            live.clear()
            run(batch)

    # -- one turn --------------------------------------------------------------------------------------

    def _turn(
        self,
        lm: LoadedModel,
        seq: Sequence,
        messages: list[Message],
        request: GenerationRequest,
        forced: list[int] | None,
        on_token: TokenCallback | None,
    ):
        """One turn as a coroutine: it yields the prompt's new tokens, then what the decoder asks for."""
        prompt = lm.fmt.render(messages)
        if seq.text and prompt.startswith(seq.text) and not seq.dirty:
            known = seq.text
        else:
            seq.reset()
            known = ""
        cached = seq.n_past
        to_eval = seq.pending + self._new_tokens(lm, prompt, known)
        prompt_tokens = cached + len(to_eval)
        rotations = self._rotations(lm, messages, known, seq.pending, to_eval, cached)
        plan = compile_schema(request.schema_)
        if prompt_tokens + request.max_tokens > seq.n_ctx:
            return Generation(
                text="", tokens=[], prompt_tokens=prompt_tokens, cached_tokens=cached,
                failure=f"the prompt ({prompt_tokens} tokens) and a ballot of up to {request.max_tokens} tokens "
                f"do not fit the {seq.n_ctx}-token context",
            )
        seq.dirty = True
        try:
            yield (to_eval[: rotations.base - cached] if rotations else to_eval), False
            decoded = yield from decode_steps(
                seq, lm.vocab, plan, request.sampling, request.seed, request.max_tokens, forced=forced,
                on_token=on_token, rotations=rotations,
            )
        except ContextFull as exc:
            seq.reset()
            return Generation(text="", tokens=[], prompt_tokens=prompt_tokens, cached_tokens=cached, failure=str(exc))
        text = b"".join(lm.vocab.pieces[t] for t in decoded.tokens).decode("utf-8", errors="replace")
        seq.text = prompt + text
        seq.pending = decoded.tokens[len(decoded.tokens) - decoded.unevaluated :] if decoded.unevaluated else []
        seq.turns.append(tuple(decoded.tokens))
        seq.dirty = False
        return Generation(
            text=text,
            tokens=decoded.tokens,
            choices=decoded.choices,
            prompt_tokens=prompt_tokens,
            cached_tokens=cached,
            completion_tokens=len(decoded.tokens),
            failure=decoded.failure,
        )

    @staticmethod
    def _new_tokens(lm: LoadedModel, prompt: str, known: str) -> list[int]:
        """The tokens of ``prompt`` past the text the sequence already holds (all of it, BOS included, if none)."""
        return lm.vocab.tokenize(prompt[len(known) :], special=True) if known else lm.vocab.prompt_tokens(prompt)

    def _rotations(
        self, lm: LoadedModel, messages: list[Message], known: str, pending: list[int], to_eval: list[int], cached: int
    ) -> Rotations | None:
        """The prompt's tail as shown and in the other rotations of its options (the last user turn's variants),
        from the first token where any of them differs; None when the turn shows one order only."""
        last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
        if last is None or not messages[last].variants:
            return None
        variants = []
        for text in messages[last].variants:
            swapped = [*messages[:last], messages[last].model_copy(update={"content": text, "variants": None}), *messages[last + 1 :]]
            variants.append(pending + self._new_tokens(lm, lm.fmt.render(swapped), known))
        split = min(common_prefix([to_eval, v]) for v in variants)
        if split == 0:  # the opening evaluation is never empty
            return None
        return Rotations(base=cached + split, tail=to_eval[split:], variants=[v[split:] for v in variants])

    # -- the rest ----------------------------------------------------------------------------------

    def describe(self) -> dict:
        return {
            "backend": "llama.cpp",
            "localpanel": __version__,
            "llama_cpp_python": L.__version__,
            "llama_cpp_system_info": L.llama_print_system_info().decode(errors="replace").strip(),
            "gpu_offload_supported": bool(L.llama_supports_gpu_offload()),
            "threads": self.threads,
            "batch_size": self.settings.batch_size,
            "context_length": self.settings.context_length,
            "gpu_layers": self.settings.gpu_layers,
            "max_memory": self.settings.max_memory,
            "platform": platform.platform(),
            "machine": platform.machine(),
            "processor": _cpu_name(),
            "python": platform.python_version(),
        }

    def close(self) -> None:
        for lm in list(self.loaded.values()) + list(self.vocab_only.values()):
            lm.close()
        self.loaded.clear()
        self.vocab_only.clear()

    def __enter__(self) -> "LlamaBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
