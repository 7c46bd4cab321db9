"""Models for the llama.cpp backend: each GGUF loaded once, checked first, kept while there is room.

``ModelCache`` holds the loaded models (least recently used unloaded first under --max-memory) and, for
counting tokens before a model is needed, vocabularies loaded alone. A ``LoadedModel`` keeps the contexts
made for it, one per group of conversation keys, each sized to what its requests can reach.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp as L

from localpanel.engine.llama_context import Context, Stats, _init_llama, _last_log_error
from localpanel.engine.prompting import PromptFormat, prompt_format
from localpanel.engine.runtime import RuntimeSettings
from localpanel.engine.vocab import Vocab
from localpanel.errors import ModelLoadError
from localpanel.weights.gguf import read_gguf
from localpanel.weights.registry import ModelSpec


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


def context_size(window: int, hints: list[int | None]) -> int:
    """Tokens per sequence for a group: each request's need (rounded up to 256, at least 512) or, without a
    hint, the whole window; the largest of them, never more than the window."""
    return max(min(window, max(512, -(-hint // 256) * 256)) if hint else window for hint in hints)


class ModelCache:
    """Loaded models by path, least recently used first, and vocabularies loaded alone for counting tokens."""

    def __init__(self, settings: RuntimeSettings):
        self.settings = settings
        self.loaded: collections.OrderedDict[Path, LoadedModel] = collections.OrderedDict()
        self.vocab_only: dict[Path, LoadedModel] = {}
        self.loads = 0

    def get(self, spec: ModelSpec, path: Path) -> LoadedModel:
        lm = self.loaded.get(path)
        if lm is not None:
            self.loaded.move_to_end(path)
            return lm
        self.make_room(path.stat().st_size)
        gpu = spec.gpu_layers if spec.gpu_layers is not None else self.settings.gpu_layers
        lm = _load_model(spec, path, gpu)
        self.loads += 1
        self.loaded[path] = lm
        counted = self.vocab_only.pop(path, None)
        if counted is not None:  # its vocabulary tables are already built: keep them, free the rest
            lm.vocab.adopt(counted.vocab)
            counted.close()
        return lm

    def make_room(self, size: int) -> None:
        """Unload least recently used models until ``size`` more bytes fit under --max-memory."""
        limit = self.settings.max_memory
        while limit and self.loaded and sum(m.size for m in self.loaded.values()) + size > limit:
            _, old = self.loaded.popitem(last=False)
            old.close()

    def vocab(self, spec: ModelSpec, path: Path) -> LoadedModel:
        """A model to count tokens with: the loaded model, else its vocabulary alone (kept until the model
        loads and takes over its tables), so that counting never loads weights or evicts a model. A run
        counts its prompts once the model is loaded; only a fit check near the limit loads a vocabulary."""
        lm = self.loaded.get(path) or self.vocab_only.get(path)
        if lm is None:
            lm = self.vocab_only[path] = _load_model(spec, path, 0, vocab_only=True)
        return lm

    def is_known(self, path: Path) -> bool:
        return path in self.loaded or path in self.vocab_only

    def close(self) -> None:
        for lm in list(self.loaded.values()) + list(self.vocab_only.values()):
            lm.close()
        self.loaded.clear()
        self.vocab_only.clear()


class ContextPool:
    """A context per group of conversation keys on each model, each sized to what its requests can reach."""

    def __init__(self, settings: RuntimeSettings, threads: int, stats: Stats):
        self.settings, self.threads, self.stats = settings, threads, stats

    def get(self, lm: LoadedModel, keys: tuple[str, ...], n_ctx: int, extra: int = 0) -> Context:
        """The group's context, with a sequence per key of ``n_ctx`` tokens each (KV memory grows with it), and
        ``extra`` more (the opening a group shares, see turns.share).

        A context of another size is made anew, never reused, because the KV size can change llama.cpp's
        results in the last bits, and a reused one would make a question's ballots depend on which questions
        ran before it (on another Ray worker, in another order)."""
        ctx = lm.contexts.get(keys)
        if ctx is not None and (ctx.n_ctx != n_ctx or len(ctx.seqs) != len(keys) + extra):
            ctx.close()
            ctx = None
        if ctx is None:
            ctx = lm.contexts[keys] = Context(lm, n_ctx, self.settings, self.threads, n_seq=len(keys) + extra,
                                              stats=self.stats)
        return ctx
