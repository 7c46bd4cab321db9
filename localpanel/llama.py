"""The llama.cpp backend: loads each GGUF once, keeps one KV state per participant, decodes under the ballot plan.

Every participant gets its own llama.cpp context on the shared model weights, so participants that share a
model never evict each other's state. Each turn's prompt extends the participant's previous prompt and
answer, so only the new part is evaluated. When a state is lost (a resumed run, a model unloaded to respect
--max-memory) it is rebuilt by evaluating the earlier turns exactly as they were first evaluated, which is
what keeps a resumed run identical to an uninterrupted one.
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

import llama_cpp as L
import numpy as np

from . import __version__
from .decoding import ReplayMismatch, decode_plan
from .errors import ModelLoadError
from .gguf import read_gguf
from .grammar import compile_schema
from .prompting import PromptFormat, prompt_format
from .registry import ModelSpec
from .runtime import Generation, GenerationRequest, Message, RuntimeSettings, TokenCallback, physical_cores
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


class Context:
    """One participant's llama.cpp context: the tokens in its KV cache and the text they stand for."""

    def __init__(self, model: "LoadedModel", n_ctx: int, settings: RuntimeSettings, threads: int):
        params = L.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = settings.batch_size
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = threads
        params.swa_full = True  # sliding-window models (Gemma 3) must keep the full cache to reuse prefixes
        params.no_perf = True
        self.ctx = L.llama_init_from_model(model.model, params)
        if not self.ctx:
            raise ModelLoadError(
                f"llama.cpp could not create a {n_ctx}-token context for {model.spec.name!r} "
                f"(too little memory?) {_last_log_error()}".strip()
            )
        self.mem = L.llama_get_memory(self.ctx)
        self.n_ctx = n_ctx
        self.n_vocab = model.vocab.n
        self.batch_size = settings.batch_size
        self.batch = L.llama_batch_init(settings.batch_size, 0, 1)
        self.n_past = 0
        self.text = ""  # the conversation text whose tokens are in the cache (or pending)
        self.pending: list[int] = []  # tokens of that text not yet evaluated (the end of the last answer)
        self.turns: list[tuple[int, ...]] = []  # assistant turns this state contains

    def reset(self) -> None:
        L.llama_memory_clear(self.mem, True)
        self.n_past = 0
        self.text, self.pending, self.turns = "", [], []

    def eval(self, tokens: list[int], all_logits: bool = False) -> None:
        if self.n_past + len(tokens) > self.n_ctx:
            raise ContextFull(f"the conversation needs more than the {self.n_ctx}-token context")
        for start in range(0, len(tokens), self.batch_size):
            chunk = tokens[start : start + self.batch_size]
            last_chunk = start + self.batch_size >= len(tokens)
            b = self.batch
            b.n_tokens = len(chunk)
            for i, tok in enumerate(chunk):
                b.token[i] = tok
                b.pos[i] = self.n_past + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = 0
                b.logits[i] = all_logits and last_chunk
            b.logits[len(chunk) - 1] = last_chunk
            rc = L.llama_decode(self.ctx, b)
            if rc != 0:
                raise ContextFull(f"llama_decode failed (status {rc}) {_last_log_error()}".strip())
            self.n_past += len(chunk)

    def logits(self, i: int = -1) -> np.ndarray:
        ptr = L.llama_get_logits_ith(self.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def rollback(self, n_past: int) -> None:
        L.llama_memory_seq_rm(self.mem, 0, n_past, -1)
        self.n_past = n_past

    def close(self) -> None:
        if self.ctx:
            L.llama_batch_free(self.batch)
            L.llama_free(self.ctx)
            self.ctx = None


class ContextFull(Exception):
    pass


@dataclass
class LoadedModel:
    spec: ModelSpec
    path: Path
    model: object
    vocab: Vocab
    fmt: PromptFormat
    n_ctx_train: int
    size: int
    contexts: dict[str, Context] = field(default_factory=dict)

    def close(self) -> None:
        for ctx in self.contexts.values():
            ctx.close()
        self.contexts.clear()
        if self.model:
            L.llama_model_free(self.model)
            self.model = None


def _load_model(spec: ModelSpec, path: Path, gpu_layers: int, vocab_only: bool = False) -> LoadedModel:
    info = read_gguf(path)  # a malformed file would abort the process inside llama.cpp
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
    """Runs constrained generations on llama.cpp, one participant at a time (never two contexts at once)."""

    def __init__(self, settings: RuntimeSettings | None = None):
        self.settings = settings or RuntimeSettings()
        self.threads = self.settings.threads or physical_cores()
        self.loaded: collections.OrderedDict[Path, LoadedModel] = collections.OrderedDict()
        self.vocab_only: dict[Path, LoadedModel] = {}
        self.model_loads = 0

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
        lm = self.loaded.get(path) or self.vocab_only.get(path)
        if lm is None:
            lm = self.vocab_only[path] = _load_model(spec, path, 0, vocab_only=True)
        return lm

    def context_length(self, model: ModelSpec, model_path: Path) -> int:
        lm = self._vocab_model(model, model_path)
        limits = [self.settings.context_length, lm.n_ctx_train or self.settings.context_length]
        if model.context_length:
            limits.append(model.context_length)
        return min(limits)

    def count_tokens(self, model: ModelSpec, model_path: Path, messages: list[Message]) -> int:
        lm = self._vocab_model(model, model_path)
        return len(lm.vocab.prompt_tokens(lm.fmt.render(self._clean(lm, messages))))

    # -- generation --------------------------------------------------------------------------------

    def _clean(self, lm: LoadedModel, messages: list[Message]) -> list[Message]:
        # Untrusted text (the question, other participants' rationales) must not smuggle in control tokens.
        return [
            m if m.role == "assistant" else m.model_copy(update={"content": lm.vocab.neutralize(m.content)})
            for m in messages
        ]

    def _context(self, lm: LoadedModel, key: str, hint: int | None) -> Context:
        """The conversation's context, as large as it will need (KV memory grows with it), within the window."""
        window = self.context_length(lm.spec, lm.path)
        n_ctx = min(window, max(512, -(-hint // 256) * 256)) if hint else window
        ctx = lm.contexts.get(key)
        if ctx is not None and ctx.n_ctx != n_ctx:
            ctx.close()
            ctx = None
        if ctx is None:
            ctx = lm.contexts[key] = Context(lm, n_ctx, self.settings, self.threads)
        return ctx

    def generate(self, request: GenerationRequest, on_token: TokenCallback | None = None) -> Generation:
        lm = self._model(request.model, request.model_path)
        ctx = self._context(lm, request.key, request.context_hint)
        messages = self._clean(lm, request.messages)
        started = time.perf_counter()
        rebuilt = self._sync(lm, ctx, messages, request)
        rebuild_seconds = time.perf_counter() - started if rebuilt else 0.0
        t0 = time.perf_counter()
        result = self._turn(lm, ctx, messages, request, forced=None, on_token=on_token)
        result.seconds = time.perf_counter() - t0
        result.rebuild_seconds = rebuild_seconds
        return result

    def _sync(self, lm: LoadedModel, ctx: Context, messages: list[Message], request: GenerationRequest) -> bool:
        """Make the context hold exactly the earlier turns of this conversation; rebuild it if it does not."""
        earlier = [(i, m) for i, m in enumerate(messages) if m.role == "assistant"]
        wanted = [tuple(m.tokens or ()) for _, m in earlier]
        if ctx.turns == wanted[: len(ctx.turns)] and ctx.text and lm.fmt.render(messages).startswith(ctx.text):
            done = len(ctx.turns)
        else:
            ctx.reset()
            done = 0
        for i, m in earlier[done:]:
            if m.tokens is None or m.schema_ is None:
                raise ReplayMismatch("an earlier answer has no recorded tokens to rebuild the state from")
            past = request.model_copy(update={"messages": messages[:i], "schema_": m.schema_})
            self._turn(lm, ctx, messages[:i], past, forced=list(m.tokens), on_token=None)
        return done < len(earlier)

    def _turn(
        self,
        lm: LoadedModel,
        ctx: Context,
        messages: list[Message],
        request: GenerationRequest,
        forced: list[int] | None,
        on_token: TokenCallback | None,
    ) -> Generation:
        prompt = lm.fmt.render(messages)
        if ctx.text and prompt.startswith(ctx.text):
            new = lm.vocab.tokenize(prompt[len(ctx.text) :], special=True)
        else:
            ctx.reset()
            new = lm.vocab.prompt_tokens(prompt)
        cached = ctx.n_past
        to_eval = ctx.pending + new
        prompt_tokens = cached + len(to_eval)
        plan = compile_schema(request.schema_)
        if prompt_tokens + request.max_tokens > ctx.n_ctx and forced is None:
            return Generation(
                text="", tokens=[], prompt_tokens=prompt_tokens, cached_tokens=cached,
                failure=f"the prompt ({prompt_tokens} tokens) and a ballot of up to {request.max_tokens} tokens "
                f"do not fit the {ctx.n_ctx}-token context",
            )
        try:
            t0 = time.perf_counter()
            ctx.eval(to_eval)
            prompt_seconds = time.perf_counter() - t0
            decoded = decode_plan(
                ctx, lm.vocab, plan, request.sampling, request.seed, request.max_tokens, forced=forced, on_token=on_token
            )
        except ContextFull as exc:
            ctx.reset()
            return Generation(text="", tokens=[], prompt_tokens=prompt_tokens, cached_tokens=cached, failure=str(exc))
        text = b"".join(lm.vocab.pieces[t] for t in decoded.tokens).decode("utf-8", errors="replace")
        ctx.text = prompt + text
        ctx.pending = decoded.tokens[len(decoded.tokens) - decoded.unevaluated :] if decoded.unevaluated else []
        ctx.turns.append(tuple(decoded.tokens))
        return Generation(
            text=text,
            tokens=decoded.tokens,
            choices=decoded.choices,
            prompt_tokens=prompt_tokens,
            cached_tokens=cached,
            completion_tokens=len(decoded.tokens),
            prompt_seconds=prompt_seconds,
            failure=decoded.failure,
        )

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
