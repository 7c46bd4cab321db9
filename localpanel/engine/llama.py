"""The llama.cpp backend: loads each GGUF once, keeps one KV state per participant, decodes under the ballot plan.

Its parts, each in a module of its own: the models (``llama_models.ModelCache``), a context per group
(``llama_models.ContextPool``, ``llama_context.Context``), the lockstep scheduler (``lockstep``) and one turn
and the rebuild of lost states (``turns``). ``LlamaBackend`` puts them together behind the Backend protocol.

Participants that share a model and are asked together (a round's requests) share one llama.cpp context,
with a sequence each: their new prompt tokens are evaluated in one batch, and their ballots are decoded in
lockstep, one ``llama_decode`` per step for all of them, until each one closes. Each turn's prompt extends
the participant's previous prompt and answer, so only the new part is evaluated; or, for fresh prompts that
open alike and ask for it (the shared layout, the moderator), their common opening is evaluated once and
copied to each sequence (``turns.share``).

What keeps a run, its resume and its replay identical: a batch is composed from the requests alone (their
order, and the tokens each one needs at each step), never from timing. When a state is lost (a resumed run,
a model unloaded to respect --max-memory) the group's earlier rounds are evaluated again in the same
lockstep, with the recorded tokens forced, and a turn the journal already holds is decoded forced beside the
ones still to run. With ``RuntimeSettings.batch_sequences`` off, each request runs alone, as it always did.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Callable

import llama_cpp as L

from localpanel._version import __version__
from localpanel.engine.llama_context import Context, Stats
from localpanel.engine.llama_models import ContextPool, LoadedModel, ModelCache, _checked_gguf, context_size
from localpanel.engine.lockstep import lockstep
from localpanel.engine.prompting import prompt_format
from localpanel.engine.runtime import (
    DoneCallback,
    Generation,
    GenerationRequest,
    Message,
    RuntimeSettings,
    TokenCallback,
    physical_cores,
)
from localpanel.engine.turns import rebuild, share, turn
from localpanel.weights.registry import ModelSpec

__all__ = ["Context", "LlamaBackend"]


class LlamaBackend:
    """Runs constrained generations on llama.cpp: seats that share a model decode together in one context."""

    def __init__(self, settings: RuntimeSettings | None = None):
        self.settings = settings or RuntimeSettings()
        self.threads = self.settings.threads or physical_cores()
        self.stats = Stats()
        self.models = ModelCache(self.settings)
        self.contexts = ContextPool(self.settings, self.threads, self.stats)

    @property
    def model_loads(self) -> int:
        return self.models.loads

    def _model(self, spec: ModelSpec, path: Path) -> LoadedModel:
        return self.models.get(spec, path)

    def _vocab_model(self, spec: ModelSpec, path: Path) -> LoadedModel:
        return self.models.vocab(spec, path)

    # -- counting --------------------------------------------------------------------------------------

    def context_length(self, model: ModelSpec, model_path: Path) -> int:
        trained = _checked_gguf(model_path).context_length  # what llama.cpp reads as n_ctx_train: no load needed
        limits = [self.settings.context_length, trained or self.settings.context_length]
        if model.context_length:
            limits.append(model.context_length)
        return min(limits)

    def count_tokens(self, model: ModelSpec, model_path: Path, messages: list[Message]) -> int:
        lm = self.models.vocab(model, model_path)
        return len(lm.vocab.prompt_tokens(lm.fmt.render(self._clean(lm, messages))))

    def token_bound(self, model: ModelSpec, model_path: Path, messages: list[Message]) -> int:
        """An upper bound on ``count_tokens`` from the GGUF header alone, so that checking that an ordinary prompt
        fits loads nothing (loading a 262k-token vocabulary takes half a second). A token is at least one byte
        of the rendered prompt (BPE pieces, SentencePiece pieces and byte fallback alike; a special token's
        text is longer than one byte), plus a BOS and a leading space the tokenizer may add; breaking up
        control-token texts in untrusted text adds 3 bytes per match of 2 or more bytes."""
        if self.models.is_known(model_path):
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

    # -- generating ------------------------------------------------------------------------------------

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
        lm = self.models.get(group[0].model, group[0].model_path)
        hints = [self.count_tokens(r.model, r.model_path, r.context_base) + r.context_extra if r.context_base else None
                 for r in group]
        n_ctx = context_size(self.context_length(lm.spec, lm.path), hints)
        ctx = self.contexts.get(lm, tuple(r.key for r in group), n_ctx, extra=1 if all(r.share_prefix for r in group) else 0)
        conversations = [self._clean(lm, r.messages) for r in group]
        started = time.perf_counter()
        rebuilt = rebuild(lm, ctx, conversations, group)
        rebuild_seconds = time.perf_counter() - started if rebuilt else 0.0
        started = time.perf_counter()
        shared = share(lm, ctx, conversations, group)
        share_seconds = time.perf_counter() - started

        def finish(j: int, g: Generation) -> None:
            g.rebuild_seconds = rebuild_seconds
            if shared and j == 0:  # the first turn is charged what the common opening needed evaluated, once for all
                g.cached_tokens -= shared
                g.seconds += share_seconds
                g.prompt_seconds += share_seconds
            on_done(j, g)

        turns = [
            (seq, turn(lm, seq, messages, r, forced=r.replay,
                       on_token=(lambda n, j=j: on_token(j, n)) if on_token else None))
            for j, (seq, messages, r) in enumerate(zip(ctx.seqs, conversations, group))
        ]
        lockstep(ctx, turns, finish)

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
        self.models.close()

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
