"""localpanel's benchmark: decode throughput with and without the grammar, a fixed debate, and the naive way.

Each phase runs in its own process, one after the other (never two llama.cpp processes at once), so that
peak memory and model loads are measured per phase. Prints a table, or one JSON object with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from localpanel import api
from localpanel.ballot import ballot_model
from localpanel.decoding import Sampler, decode_plan
from localpanel.grammar import compile_schema
from localpanel.llama import Context, LlamaBackend
from localpanel.protocol import DebateSettings, Question, first_round_prompt, shuffled
from localpanel.registry import ModelSpec, load_registry, shipped_registry_path
from localpanel.runtime import Generation, GenerationRequest, Message, RuntimeSettings, Sampling, busy_cores, physical_cores
from localpanel.store import Store

MODELS = ["smollm2-135m", "gemma3-270m"]
QUESTION = "Is distilling a closed model's outputs ethical?"
OPTIONS = ["Yes", "No", "It depends"]
SYSTEM = ('You are a careful panelist. Reply with a JSON ballot: "vote" is exactly one of the options, '
          '"rationale" states your main reason in one to three sentences of plain prose.')
SAMPLING = Sampling(temperature=0.8)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def weights() -> tuple[dict[str, ModelSpec], dict[str, Path]]:
    registry = load_registry(shipped_registry_path())
    store = Store()
    specs = {name: registry.model(name) for name in MODELS}
    return specs, {name: store.path_for(spec) for name, spec in specs.items()}


def prompt_messages(seed: int) -> list[Message]:
    q = Question(text=QUESTION, options=OPTIONS)
    return [Message(role="system", content=SYSTEM), Message(role="user", content=first_round_prompt(q, shuffled(OPTIONS, seed)))]


# -- phase: decode ------------------------------------------------------------------------------------


def phase_decode(runs: int, n_tokens: int, threads: int) -> dict:
    """Tokens/s of free sampling and of grammar-constrained ballots, same model, same prompt, same sampler."""
    specs, paths = weights()
    out = {}
    backend = LlamaBackend(RuntimeSettings(threads=threads, context_length=2048))
    schema = ballot_model(OPTIONS).model_json_schema()
    plan = compile_schema(schema)
    for name in MODELS:
        lm = backend._model(specs[name], paths[name])
        ctx = Context(lm, 2048, backend.settings, backend.threads)
        prompt = lm.vocab.prompt_tokens(lm.fmt.render(prompt_messages(0)))
        lm.vocab.tables, lm.vocab.char_lengths, lm.vocab.neutralize("")  # built once per model, outside the timing
        free_tokens = free_time = 0.0
        ballot_tokens = ballot_time = sampled = 0.0
        for seed in range(runs + 1):  # the first round warms caches and is not counted
            ctx.reset()
            ctx.eval(prompt)
            sampler = Sampler(lm.vocab.n, SAMPLING, seed)
            t0 = time.perf_counter()
            for _ in range(n_tokens):
                tok = sampler.sample(ctx.logits())
                sampler.accept(tok)
                ctx.eval([tok])
            dt = time.perf_counter() - t0
            sampler.close()
            ctx.reset()
            ctx.eval(prompt)
            t0 = time.perf_counter()
            decoded = decode_plan(ctx, lm.vocab, plan, SAMPLING, seed, max_tokens=512)
            bt = time.perf_counter() - t0
            assert decoded.failure is None, decoded.failure
            if seed:
                free_tokens, free_time = free_tokens + n_tokens, free_time + dt
                ballot_tokens, ballot_time = ballot_tokens + len(decoded.tokens), ballot_time + bt
                sampled += decoded.sampled
        ctx.close()
        out[name] = {
            "unconstrained_tok_s": free_tokens / free_time,
            "constrained_tok_s": ballot_tokens / ballot_time,
            "ratio": (ballot_tokens / ballot_time) / (free_tokens / free_time),
            "ballot_tokens_mean": ballot_tokens / runs,
            # Stricter: only the tokens the sampler drew, over the whole ballot's time (fixed text and the
            # vote's scoring included), against free sampling.
            "sampled_only_ratio": (sampled / ballot_time) / (free_tokens / free_time),
            "library": library_decode(paths[name], lm.fmt.render(prompt_messages(0)), schema, runs, n_tokens, threads),
        }
    backend.close()
    return out


def library_decode(path: Path, prompt: str, schema: dict, runs: int, n_tokens: int, threads: int) -> dict:
    """The same through llama-cpp-python's own create_completion: free, and with its JSON-schema grammar."""
    from llama_cpp import Llama, LlamaGrammar

    llm = Llama(str(path), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    rates = {}
    for label, kwargs in (("unconstrained_tok_s", {}), ("grammar_tok_s", {"grammar": grammar})):
        tokens = seconds = 0.0
        for seed in range(runs + 1):
            t0 = time.perf_counter()
            r = llm.create_completion(prompt, max_tokens=n_tokens, temperature=SAMPLING.temperature, top_k=40,
                                      top_p=0.95, min_p=0.05, seed=seed, **kwargs)
            if seed:  # the first call evaluates the prompt; later calls reuse it from the cache
                tokens, seconds = tokens + r["usage"]["completion_tokens"], seconds + time.perf_counter() - t0
        rates[label] = tokens / seconds
    rates["ratio"] = rates["grammar_tok_s"] / rates["unconstrained_tok_s"]
    llm.close()
    return rates


# -- phase: the fixed debate, our way and the naive way -----------------------------------------------


def typical_schema(schema: dict) -> dict:
    """The ballot schema as a typical tool writes it: length bounds but no pattern (llama-cpp-python's converter
    drops the bounds when a pattern is given, and allows raw control characters without one)."""
    schema = json.loads(json.dumps(schema))
    for prop in schema.get("properties", {}).values():
        prop.pop("pattern", None)
    for sub in schema.get("$defs", {}).values():
        for prop in sub.get("properties", {}).values():
            prop.pop("pattern", None)
    return schema


class NaiveBackend:
    """What most tools do: a fresh model load for every turn, the whole prompt evaluated every time, and the
    grammar llama-cpp-python builds from the JSON schema (what its response_format uses)."""

    def __init__(self, threads: int):
        self.threads = threads
        self.model_loads = 0
        self.inner = LlamaBackend(RuntimeSettings(threads=threads))  # only for prompt rendering and counting

    def generate(self, request: GenerationRequest, on_token=None) -> Generation:
        from llama_cpp import Llama, LlamaGrammar

        t0 = time.perf_counter()
        lm = self.inner._vocab_model(request.model, request.model_path)
        prompt = lm.fmt.render(self.inner._clean(lm, request.messages))
        llm = Llama(str(request.model_path), n_ctx=4096, n_threads=self.threads, n_threads_batch=self.threads, verbose=False)
        self.model_loads += 1
        grammar = LlamaGrammar.from_json_schema(json.dumps(typical_schema(request.schema_)), verbose=False)
        s = request.sampling
        r = llm.create_completion(prompt, grammar=grammar, max_tokens=request.max_tokens, temperature=s.temperature,
                                  top_k=s.top_k, top_p=s.top_p, min_p=s.min_p, repeat_penalty=s.repeat_penalty,
                                  seed=request.seed)
        text = r["choices"][0]["text"]
        tokens = llm.tokenize(text.encode(), add_bos=False, special=False)
        llm.close()
        failure = None if r["choices"][0]["finish_reason"] == "stop" else "cut off by max_tokens"
        return Generation(text=text, tokens=tokens, prompt_tokens=r["usage"]["prompt_tokens"],
                          completion_tokens=r["usage"]["completion_tokens"], seconds=time.perf_counter() - t0, failure=failure)

    def count_tokens(self, *a):
        return self.inner.count_tokens(*a)

    def context_length(self, *a):
        return self.inner.context_length(*a)

    def describe(self) -> dict:
        return {"backend": "naive llama-cpp-python"}

    def close(self) -> None:
        self.inner.close()


def phase_debate(naive: bool, threads: int, rounds: int, panel: str) -> dict:
    registry = load_registry(shipped_registry_path())
    real = Store()
    with tempfile.TemporaryDirectory() as home:
        (Path(home) / "models").symlink_to(real.models_dir, target_is_directory=True)
        store = Store(Path(home))
        backend = NaiveBackend(threads) if naive else LlamaBackend(RuntimeSettings(threads=threads))
        t0 = time.perf_counter()
        t = api.start_run(QUESTION, OPTIONS, registry=registry, store=store, backend=backend, panel=panel,
                          settings=DebateSettings(rounds=rounds, seed=7, early_stop=False))
        wall = time.perf_counter() - t0
        loads = backend.model_loads
        backend.close()
    turns = [x for r in t.rounds for x in r.turns]
    evaluated = sum(x.prompt_tokens - x.cached_tokens for x in turns)
    prompt_s = sum(x.prompt_seconds for x in turns)
    decode_s = sum(x.seconds - x.prompt_seconds for x in turns)
    reused = processed = 0
    for r in t.rounds[1:]:
        for x in r.turns:
            before = next(b for b in t.rounds[r.number - 2].turns if b.participant == x.participant)
            reused += x.cached_tokens
            processed += before.prompt_tokens + before.completion_tokens
    return {
        "wall_s": wall,
        "rounds_s": [sum(x.seconds + x.rebuild_seconds for x in r.turns) for r in t.rounds],
        "moderator_s": t.moderator.seconds if t.moderator else 0.0,
        "turns": len(turns),
        "ballot_tokens": sum(x.completion_tokens for x in turns) + (t.moderator.completion_tokens if t.moderator else 0),
        "failed_turns": sum(1 for x in turns if x.failure),
        "prompt_tokens_evaluated": evaluated,
        "prompt_tok_s": evaluated / prompt_s if prompt_s else None,
        "decode_tok_s": sum(x.completion_tokens for x in turns) / decode_s if decode_s and not naive else None,
        "cache_reuse_ratio": reused / processed if processed else None,
        "model_loads": loads,
        "peak_rss_mib": peak_rss_mib(),
        "result": t.result.line,
    }


# -- driver -------------------------------------------------------------------------------------------


def run_phase(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"bench phase {args} failed")
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--runs", type=int, default=5, help="ballots (and free runs) per model in the decode benchmark")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per free-sampling run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--panel", default="tiny", help="the panel of the fixed debate (default: tiny; default is real size)")
    ap.add_argument("--skip-naive", action="store_true", help="skip the naive debate (the slowest phase)")
    ap.add_argument("--phase", choices=["decode", "debate", "naive"], help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.phase == "decode":
        print(json.dumps(phase_decode(a.runs, a.tokens, a.threads)))
        return
    if a.phase in ("debate", "naive"):
        print(json.dumps(phase_debate(a.phase == "naive", a.threads, a.rounds, a.panel)))
        return

    warnings = []
    busy = busy_cores(1.0)
    load = os.getloadavg()[0]
    if (busy is not None and busy > 0.5) or load > 1.0:
        warnings.append(f"the machine is not idle (load average {load:.2f}, {busy or 0:.1f} cores busy now): figures are unreliable")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    common = ["--threads", str(a.threads), "--panel", a.panel]
    decode = run_phase(["--phase", "decode", "--runs", str(a.runs), "--tokens", str(a.tokens), *common])
    debate = run_phase(["--phase", "debate", "--rounds", str(a.rounds), *common])
    naive = None if a.skip_naive else run_phase(["--phase", "naive", "--rounds", str(a.rounds), *common])
    result = {
        "wall_s": debate["wall_s"],
        "prompt_tok_s": debate["prompt_tok_s"],
        "decode_tok_s": debate["decode_tok_s"],
        "constrained_decode_ratio": min(m["ratio"] for m in decode.values()),
        "cache_reuse_ratio": debate["cache_reuse_ratio"],
        "speedup_vs_naive": naive["wall_s"] / debate["wall_s"] if naive else None,
        # The two runs write different ballots (the naive grammar lets models stop sooner): per token written.
        "speedup_vs_naive_per_ballot_token": (
            (naive["wall_s"] / naive["ballot_tokens"]) / (debate["wall_s"] / debate["ballot_tokens"]) if naive else None
        ),
        "model_loads": debate["model_loads"],
        "peak_rss_mib": debate["peak_rss_mib"],
        "threads": a.threads,
        "panel": a.panel,
        "decode": decode,
        "debate": debate,
        "naive": naive,
        "warnings": warnings,
    }
    if a.json:
        print(json.dumps(result, indent=2))
        return
    print(f"localpanel bench · {a.threads} threads · {os.cpu_count()} CPUs" + (" · NOT IDLE" if warnings else ""))
    print("\nDecode, same prompt and sampler (tokens/s)")
    print(f"  {'model':<14} {'free':>8} {'ballot':>8} {'ratio':>6}    library: {'free':>6} {'grammar':>8} {'ratio':>6}")
    for name, m in decode.items():
        lib = m["library"]
        print(f"  {name:<14} {m['unconstrained_tok_s']:>8.1f} {m['constrained_tok_s']:>8.1f} {m['ratio']:>6.2f}"
              f"             {lib['unconstrained_tok_s']:>6.1f} {lib['grammar_tok_s']:>8.1f} {lib['ratio']:>6.2f}")
    print(f"\nFixed debate: {a.panel} panel, 4 participants x {a.rounds} rounds, seed 7, no early stop, moderator")
    rows = [("localpanel", debate)] + ([("naive", naive)] if naive else [])
    print(f"  {'':<11} {'wall s':>7} {'rounds s':<22} {'loads':>5} {'prompt tok/s':>12} {'decode tok/s':>12} {'reuse':>6} {'peak MiB':>9}")
    for label, d in rows:
        rounds = " + ".join(f"{x:.1f}" for x in d["rounds_s"])
        decode_rate = f"{d['decode_tok_s']:.1f}" if d["decode_tok_s"] else "-"
        reuse = f"{d['cache_reuse_ratio']:.2f}" if d["cache_reuse_ratio"] is not None else "-"
        print(f"  {label:<11} {d['wall_s']:>7.1f} {rounds:<22} {d['model_loads']:>5} {d['prompt_tok_s'] or 0:>12.1f} "
              f"{decode_rate:>12} {reuse:>6} {d['peak_rss_mib']:>9.0f}")
    if naive:
        print(f"\nspeedup vs naive: {result['speedup_vs_naive']:.2f}x end to end "
              f"({debate['ballot_tokens']} vs {naive['ballot_tokens']} ballot tokens written; "
              f"{result['speedup_vs_naive_per_ballot_token']:.2f}x per ballot token)")
    worst = min(m["sampled_only_ratio"] for m in decode.values())
    print(f"constrained/unconstrained decode: {result['constrained_decode_ratio']:.2f} (worst model; "
          f"{worst:.2f} counting only sampled tokens)")


if __name__ == "__main__":
    main()
