"""localpanel's benchmark: the machine's limits, a fixed debate against them, and the naive way.

Phases, each in its own process, one after the other (never two llama.cpp processes at once), so that peak
memory and model loads are measured per phase:
- limits: per model of the panel, prompt evaluation tokens/s, and decode tokens/s with k = 1, 2, 4, 8
  sequences sharing each llama_decode (one token each per call);
- decode: constrained against free decoding, ours and llama-cpp-python's grammar;
- debate / naive: the fixed 4-seat debate at 3 and at 6 rounds, localpanel's runtime and the naive one;
- forced: the first debate's ballots forced again, under its own settings and with debiasing, votes as views
  and the copy guard each turned off in turn: what each costs on the same ballots (``debias_cost``,
  ``views_cost``, ``copy_guard_cost``); runs whose ballots differ cannot tell a setting's cost from the texts';
- shared: the first debate again in the shared layout (each round's common opening evaluated once per model);
- first: time from launching `python -m localpanel poll` on the tiny panel to its first ballot token.
The compute floor of a debate is its new prompt tokens over the prompt rate plus its ballot tokens over the
best batched decode rate, per model, all measured in this run; floor_ratio is the debate's wall over it.
floor_ratio_at_width takes the decode rate at as many sequences as the panel seats on each model instead,
the most that can decode together in this debate.
Prints a table, or one JSON object with --json.
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
from localpanel.engine.decoding import Sampler, decode_plan
from localpanel.engine.grammar import compile_schema
from localpanel.engine.llama import Context, LlamaBackend
from localpanel.engine.runtime import (
    Generation,
    GenerationRequest,
    Message,
    RuntimeSettings,
    Sampling,
    busy_cores,
    each_alone,
    physical_cores,
)
from localpanel.panel.ballot import ballot_model
from localpanel.panel.protocol import DebateSettings, Question, first_round_prompt, shuffled
from localpanel.weights.registry import ModelSpec, load_registry, shipped_registry_path
from localpanel.weights.store import Store

QUESTION = "Is distilling a closed model's outputs ethical?"
OPTIONS = ["Yes", "No", "It depends"]
SYSTEM = ('You are a careful panelist. Reply with a JSON ballot: "vote" is exactly one of the options, '
          '"rationale" states your main reason in one to three sentences of plain prose.')
SAMPLING = Sampling(temperature=0.8)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def panel_models(panel: str) -> list[str]:
    p = load_registry(shipped_registry_path()).panel(panel)
    return list(dict.fromkeys([x.model for x in p.participants] + [p.moderator_model]))


def weights(panel: str) -> tuple[dict[str, ModelSpec], dict[str, Path]]:
    registry = load_registry(shipped_registry_path())
    store = Store()
    specs = {name: registry.model(name) for name in panel_models(panel)}
    return specs, {name: store.path_for(spec) for name, spec in specs.items()}


def prompt_messages(seed: int) -> list[Message]:
    q = Question(text=QUESTION, options=OPTIONS)
    return [Message(role="system", content=SYSTEM), Message(role="user", content=first_round_prompt(q, shuffled(OPTIONS, seed)))]


# -- phase: decode ------------------------------------------------------------------------------------


def phase_limits(threads: int, panel: str, widths: list[int], steps: int, prompt_len: int) -> dict:
    """Per model: prompt tokens/s (one batch of ``prompt_len`` tokens) and decode tokens/s with k sequences in
    one context, one token each per llama_decode, ``steps`` calls (the logits are read, as a decoder would)."""
    specs, paths = weights(panel)
    backend = LlamaBackend(RuntimeSettings(threads=threads, context_length=2048))
    out = {}
    for name in specs:
        lm = backend._model(specs[name], paths[name])
        text = lm.fmt.render(prompt_messages(0)) * 8
        prompt = lm.vocab.prompt_tokens(text)[:prompt_len]
        rates, prompt_rates = {}, []
        for k in widths:
            ctx = Context(lm, 1024, backend.settings, backend.threads, n_seq=k)
            for seq in ctx.seqs[:1]:  # warm-up, then the prompt rate from one sequence's prompt
                seq.eval(prompt[:32])
                seq.reset()
                t0 = time.perf_counter()
                seq.eval(prompt)
                prompt_rates.append(len(prompt) / (time.perf_counter() - t0))
            for seq in ctx.seqs[1:]:
                seq.eval(prompt)
            nxt = [int(np.argmax(seq.logits())) for seq in ctx.seqs]
            ctx.step([(seq, [t], False) for seq, t in zip(ctx.seqs, nxt)])  # warm-up of this width
            t0 = time.perf_counter()
            for _ in range(steps):
                nxt = [int(np.argmax(seq.logits())) for seq in ctx.seqs]
                ctx.step([(seq, [t], False) for seq, t in zip(ctx.seqs, nxt)])
            rates[str(k)] = k * steps / (time.perf_counter() - t0)
            ctx.close()
        out[name] = {"prompt_tok_s": max(prompt_rates), "batched_decode_tok_s": rates}
    backend.close()
    return out


def phase_first(panel: str) -> dict:
    """Run in a fresh interpreter: import, check the weights, load, and report when the first ballot token came."""
    t_import = time.time()
    from localpanel import api as lp_api  # noqa: F401 (timed: imports are part of the start)
    from localpanel.weights.registry import load_registry as lr
    from localpanel.weights.registry import shipped_registry_path as srp
    from localpanel.weights.store import Store as S

    first: list[float] = []

    def progress(event):  # the first token count comes as soon as the first token is drawn
        if event.type == "tokens" and not first:
            first.append(time.time())

    with tempfile.TemporaryDirectory() as home:
        real = S()
        (Path(home) / "models").symlink_to(real.models_dir, target_is_directory=True)
        lp_api.start_run(QUESTION, OPTIONS, registry=lr(srp()), store=S(Path(home)), panel=panel, on_event=progress,
                         settings=DebateSettings(rounds=1, seed=7), with_moderator=False)
    return {"first_token_at": first[0], "imported_at": t_import}


def phase_decode(runs: int, n_tokens: int, threads: int, panel: str) -> dict:
    """Tokens/s of free sampling and of grammar-constrained ballots, same model, same prompt, same sampler."""
    specs, paths = weights(panel)
    out = {}
    backend = LlamaBackend(RuntimeSettings(threads=threads, context_length=2048))
    schema = ballot_model(OPTIONS).model_json_schema()
    plan = compile_schema(schema)
    for name in specs:
        lm = backend._model(specs[name], paths[name])
        ctx = Context(lm, 2048, backend.settings, backend.threads).seqs[0]
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
        ctx.context.close()
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

    def generate_many(self, requests, on_token=None, on_done=None):
        return each_alone(self, requests, on_token, on_done)

    def count_tokens(self, *a):
        return self.inner.count_tokens(*a)

    def token_bound(self, *a):
        return self.inner.token_bound(*a)

    def context_length(self, *a):
        return self.inner.context_length(*a)

    def describe(self) -> dict:
        return {"backend": "naive llama-cpp-python"}

    def close(self) -> None:
        self.inner.close()


def phase_debate(naive: bool, threads: int, rounds: int, panel: str, keep: str | None = None,
                 layout: str = "conversation") -> dict:
    registry = load_registry(shipped_registry_path())
    real = Store()
    with tempfile.TemporaryDirectory() as home:
        (Path(home) / "models").symlink_to(real.models_dir, target_is_directory=True)
        store = Store(Path(home))
        backend = NaiveBackend(threads) if naive else LlamaBackend(RuntimeSettings(threads=threads))
        t0 = time.perf_counter()
        t = api.start_run(QUESTION, OPTIONS, registry=registry, store=store, backend=backend, panel=panel,
                          settings=DebateSettings(rounds=rounds, seed=7, early_stop=False, layout=layout))
        wall = time.perf_counter() - t0
        loads = backend.model_loads
        if keep:  # the journaled debate the same-ballot phases force again
            Path(keep).write_text(t.model_dump_json())
        if naive:
            backend.stats = None
        backend.close()
    turns = [x for r in t.rounds for x in r.turns]
    model_of = {p.name: p.model for p in t.participants}
    per_model: dict[str, dict[str, int]] = {}
    for p in t.participants:
        per_model.setdefault(p.model, {"prompt_tokens": 0, "ballot_tokens": 0, "seats": 0})["seats"] += 1
    for x in turns:
        m = per_model[model_of[x.participant]]
        m["prompt_tokens"] += x.prompt_tokens - x.cached_tokens
        m["ballot_tokens"] += x.completion_tokens
    if t.moderator:
        m = per_model.setdefault(t.moderator.model, {"prompt_tokens": 0, "ballot_tokens": 0, "seats": 1})
        m["prompt_tokens"] += sum(p.prompt_tokens for p in t.moderator.passages)
        m["ballot_tokens"] += t.moderator.completion_tokens
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
        "per_model": per_model,
        "runtime_stats": backend.stats.as_dict() if not naive else None,
    }


# -- phase: the same ballots again, one setting changed ------------------------------------------------

# What each same-ballot comparison changes, from the debate's own settings.
SAME_BALLOT = {
    "debias": {"debias": False},
    "views": {"vote_draw": True},
    "copy_guard": {"copy_guard": None},
}


def phase_forced(threads: int, panel: str, transcript: str) -> dict:
    """Run one journaled debate's turns again, with every ballot forced to its recorded tokens, under the debate's
    own settings and with each setting of ``SAME_BALLOT`` changed, side by side in one process: one backend per
    variant (each its own models and contexts, all loaded before the clock starts), and for each round and each
    model the same group of turns run on every backend in turn, the order rotating, so that a machine that slows
    down or speeds up weighs on every variant alike. Forcing samples nothing but makes every evaluation a generated
    ballot makes (the prompt, each ballot token, each vote's scoring under each rotation), so the variants differ
    by what the setting costs and nothing else: not by other votes or other texts. The moderator is not part of it
    (it reads only the ballots)."""
    from localpanel.panel.protocol import Rounds
    from localpanel.runs.transcript import Transcript

    t = Transcript.model_validate_json(Path(transcript).read_text())
    registry = load_registry(shipped_registry_path())
    seats, _ = api.seats_for(registry, Store(), panel)
    turns = [x for r in t.rounds for x in r.turns]
    names = ["as_run", *SAME_BALLOT]
    backends = {n: LlamaBackend(RuntimeSettings(threads=threads)) for n in names}
    runs = {n: Rounds(Question.checked(t.question, t.options), seats,
                      t.settings.model_copy(update=SAME_BALLOT.get(n, {})), backends[n], done=turns) for n in names}
    for backend in backends.values():
        for seat in seats:
            backend._model(seat.model, seat.model_path)
    wall = dict.fromkeys(names, 0.0)
    prompt_tokens = dict.fromkeys(names, 0)
    k = 0
    for r in range(1, len(t.rounds) + 1):
        models = list(dict.fromkeys(s.model.name for s in runs["as_run"].order(r)))
        for model in models:
            for n in names[k % len(names):] + names[: k % len(names)]:
                rounds = runs[n]
                plans = [rounds.plan(s, r) for s in rounds.order(r) if s.model.name == model]
                requests = [rounds.request(p, rounds.turn(p.seat.name, r)) for p in plans]
                t0 = time.perf_counter()
                got = backends[n].generate_many(requests)
                wall[n] += time.perf_counter() - t0
                prompt_tokens[n] += sum(g.prompt_tokens - g.cached_tokens for g in got)
            k += 1
    out = {n: {"wall_s": wall[n], "prompt_tokens_evaluated": prompt_tokens[n],
               "runtime_stats": backends[n].stats.as_dict()} for n in names}
    out["copy_guard"]["guard_host_s"] = guard_seconds(backends["as_run"], runs["as_run"], t)
    for backend in backends.values():
        backend.close()
    return out


def guard_seconds(backend: LlamaBackend, rounds, t) -> float:
    """What the copy guard's checks cost on the recorded ballots: forced tokens are never checked, so the guard is
    asked here about each token of each later-round ballot, as a sampled token is (``banned``, then ``rejects``)."""
    from localpanel.engine.turns import copy_guard

    spent = 0.0
    for r in t.rounds[1:]:
        for x in r.turns:
            seat = next(s for s in rounds.seats if s.name == x.participant)
            lm = backend._model(seat.model, seat.model_path)
            request = rounds.request(rounds.plan(seat, r.number))
            t0 = time.perf_counter()
            guard = copy_guard(lm.vocab, request)
            own, body = [], b""
            for tok in x.tokens:
                if guard is not None:
                    guard.banned(own)
                    guard.rejects(body, lm.vocab.pieces[tok])
                own.append(tok)
                body += lm.vocab.pieces[tok]
            spent += time.perf_counter() - t0
    return spent


# -- driver -------------------------------------------------------------------------------------------


def run_phase(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"bench phase {args} failed")
    return json.loads(out.stdout)


def same_ballots(transcript: str, common: list[str], progress) -> dict:
    """What debiasing, votes as views and the copy guard cost on the same ballots (see ``phase_forced``): debiasing,
    views and the copy guard are on in the debate, so each cost is the wall as run over the wall with it off (drawn
    votes, for views), less one; the copy guard's adds its checks, which forced tokens skip."""
    progress("bench: the same ballots again, as run and with debiasing, views and the copy guard off…")
    runs = run_phase(["--phase", "forced", "--transcript", transcript, *common])
    wall = runs["as_run"]["wall_s"]
    return {
        "same_ballots": runs,
        "debias_cost": wall / runs["debias"]["wall_s"] - 1,
        "views_cost": wall / runs["views"]["wall_s"] - 1,
        "copy_guard_cost": (wall + runs["copy_guard"]["guard_host_s"]) / runs["copy_guard"]["wall_s"] - 1,
    }


def print_same(same: dict) -> None:
    base = same["same_ballots"]["as_run"]
    print(f"\nThe same ballots forced again: {base['wall_s']:.1f} s as run, {base['runtime_stats']['tokens']} tokens "
          "through llama_decode; with each setting off:")
    for change, label in (("debias", "debiasing"), ("views", "votes as views"), ("copy_guard", "the copy guard")):
        x = same["same_ballots"][change]
        print(f"  {label:<16} {same[change + '_cost']:+7.1%}   without it {x['wall_s']:.1f} s, "
              f"{x['runtime_stats']['tokens']} tokens")


def layout_figures(conversation: dict, shared: dict) -> dict:
    """The debate in the shared layout beside the same debate in the conversation layout (other prompts, so other
    ballots: its tokens and time are its own run's)."""
    return {"shared_layout": shared,
            "shared_prompt_tokens_ratio": shared["prompt_tokens_evaluated"] / conversation["prompt_tokens_evaluated"],
            "shared_wall_ratio": shared["wall_s"] / conversation["wall_s"]}


def print_layout(out: dict) -> None:
    c, s = out["conversation"], out["shared_layout"]
    print(f"\nShared layout against the conversation layout (other prompts, other ballots): "
          f"{s['prompt_tokens_evaluated']} against {c['prompt_tokens_evaluated']} prompt tokens evaluated "
          f"({out['shared_prompt_tokens_ratio'] - 1:+.1%}), {s['ballot_tokens']} against {c['ballot_tokens']} ballot "
          f"tokens, {s['wall_s']:.1f} s against {c['wall_s']:.1f} s ({out['shared_wall_ratio'] - 1:+.1%})")


def floor_seconds(debate: dict, limits: dict, at_width: bool = False) -> float:
    """The least time the debate's own work can take here: per model, its new prompt tokens at the prompt rate
    plus its ballot tokens at the best batched decode rate, or, ``at_width``, at the rate of as many sequences
    as the panel seats on that model (the most that can decode together)."""
    total = 0.0
    for model, n in debate["per_model"].items():
        lim = limits[model]
        rates = {int(k): v for k, v in lim["batched_decode_tok_s"].items()}
        if at_width:
            rate = rates[max([k for k in rates if k <= n["seats"]] or [min(rates)])]
        else:
            rate = max(rates.values())
        total += n["prompt_tokens"] / lim["prompt_tok_s"] + n["ballot_tokens"] / rate
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--panel", default="default", help="the panel of the fixed debate (default: default, the real-size one)")
    ap.add_argument("--runs", type=int, default=3, help="ballots (and free runs) per model in the decode comparison")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per free-sampling run")
    ap.add_argument("--rounds", type=int, nargs="+", default=[3, 6], help="debate lengths to run (default: 3 6)")
    ap.add_argument("--widths", type=int, nargs="+", default=[1, 2, 4, 8], help="sequences per llama_decode to measure")
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--skip-naive", action="store_true", help="skip the naive debates (the slowest phases)")
    ap.add_argument("--skip-decode", action="store_true", help="skip the constrained-against-free decode comparison")
    ap.add_argument("--skip-same", action="store_true", help="skip the same-ballot costs (debiasing, views, copy guard)")
    ap.add_argument("--skip-shared", action="store_true", help="skip the debate in the shared layout")
    ap.add_argument("--only-layout", action="store_true",
                    help="run only the debate in the conversation layout and in the shared layout")
    ap.add_argument("--only-same", action="store_true",
                    help="run only the debate and the same-ballot costs of debiasing, views and the copy guard")
    ap.add_argument("--phase", choices=["limits", "decode", "debate", "naive", "first", "forced", "shared"],
                    help=argparse.SUPPRESS)
    ap.add_argument("--single-rounds", type=int, default=3, help=argparse.SUPPRESS)
    ap.add_argument("--keep", help=argparse.SUPPRESS)
    ap.add_argument("--transcript", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.phase:
        out = {
            "limits": lambda: phase_limits(a.threads, a.panel, a.widths, 32, 256),
            "decode": lambda: phase_decode(a.runs, a.tokens, a.threads, a.panel),
            "debate": lambda: phase_debate(False, a.threads, a.single_rounds, a.panel, keep=a.keep),
            "forced": lambda: phase_forced(a.threads, a.panel, a.transcript),
            "shared": lambda: phase_debate(False, a.threads, a.single_rounds, a.panel, layout="shared"),
            "naive": lambda: phase_debate(True, a.threads, a.single_rounds, a.panel),
            "first": lambda: phase_first(a.panel),
        }[a.phase]()
        print(json.dumps(out))
        return

    for panel in dict.fromkeys(["tiny", a.panel]):  # weights first, so that no phase times a download
        pulled = subprocess.run([str(Path(sys.executable).with_name("localpanel")), "pull", "--panel", panel],
                                stdout=sys.stderr)
        if pulled.returncode != 0:
            raise SystemExit(f"bench: could not pull the {panel} panel's weights (see above); fix that and run it again.")
    warnings = []
    busy = busy_cores(1.0)
    load = os.getloadavg()[0]
    if (busy is not None and busy > 0.5) or load > 1.0:
        warnings.append(f"the machine is not idle (load average {load:.2f}, {busy or 0:.1f} cores busy now): figures are unreliable")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    common = ["--threads", str(a.threads), "--panel", a.panel]
    progress = (lambda msg: print(msg, file=sys.stderr, flush=True))
    if a.only_layout:
        r = a.rounds[0]
        progress(f"bench: {r}-round debate, conversation layout…")
        d = run_phase(["--phase", "debate", "--single-rounds", str(r), *common])
        progress(f"bench: {r}-round debate, shared layout…")
        out = {"conversation": d, **layout_figures(d, run_phase(["--phase", "shared", "--single-rounds", str(r), *common]))}
        if a.json:
            print(json.dumps(out, indent=2))
        else:
            print_layout(out)
        return
    if a.only_same:
        r = a.rounds[0]
        with tempfile.TemporaryDirectory() as tmp:
            progress(f"bench: {r}-round debate…")
            d = run_phase(["--phase", "debate", "--single-rounds", str(r), "--keep", f"{tmp}/t.json", *common])
            same = same_ballots(f"{tmp}/t.json", common, progress)
        out = {"wall_s": d["wall_s"], "moderator_share": d["moderator_s"] / d["wall_s"],
               "prompt_tokens_evaluated": d["prompt_tokens_evaluated"], **same, "debate": d}
        if a.json:
            print(json.dumps(out, indent=2))
        else:
            print(f"{r}-round debate: {d['wall_s']:.1f} s, moderator {out['moderator_share']:.1%}, "
                  f"{d['prompt_tokens_evaluated']} prompt tokens evaluated")
            print_same(same)
        return
    progress("bench: time to first token (tiny panel)…")
    firsts = []
    for _ in range(3):  # the first launch also warms the page cache; the best of three is the start-up cost
        t0 = time.time()
        got = run_phase(["--phase", "first", "--panel", "tiny", "--threads", str(a.threads)])
        firsts.append({"first_token_s": got["first_token_at"] - t0, "to_import_s": got["imported_at"] - t0})
    first = min(firsts, key=lambda f: f["first_token_s"])
    progress(f"bench: limits of the {a.panel} panel's models…")
    limits = run_phase(["--phase", "limits", "--widths", *map(str, a.widths), *common])
    decode = None
    if not a.skip_decode:
        progress("bench: constrained against free decoding…")
        decode = run_phase(["--phase", "decode", "--runs", str(a.runs), "--tokens", str(a.tokens), *common])
    debates, naives = {}, {}
    kept = tempfile.TemporaryDirectory()
    for r in a.rounds:
        progress(f"bench: {r}-round debate…")
        debates[r] = run_phase(["--phase", "debate", "--single-rounds", str(r), "--keep", f"{kept.name}/{r}.json", *common])
        debates[r]["floor_s"] = floor_seconds(debates[r], limits)
        debates[r]["floor_ratio"] = debates[r]["wall_s"] / debates[r]["floor_s"]
        debates[r]["floor_at_width_s"] = floor_seconds(debates[r], limits, at_width=True)
        debates[r]["floor_ratio_at_width"] = debates[r]["wall_s"] / debates[r]["floor_at_width_s"]
        if not a.skip_naive:
            progress(f"bench: {r}-round debate, the naive way…")
            naives[r] = run_phase(["--phase", "naive", "--single-rounds", str(r), *common])
    main_r = a.rounds[0]
    d = debates[main_r]
    same = {} if a.skip_same else same_ballots(f"{kept.name}/{main_r}.json", common, progress)
    layout = {}
    if not a.skip_shared:
        progress(f"bench: {main_r}-round debate, shared layout…")
        layout = layout_figures(d, run_phase(["--phase", "shared", "--single-rounds", str(main_r), *common]))
    kept.cleanup()

    def speedup(r):
        return naives[r]["wall_s"] / debates[r]["wall_s"] if r in naives else None

    result = {
        "panel": a.panel,
        "threads": a.threads,
        "floor_ratio": d["floor_ratio"],
        "floor_s": d["floor_s"],
        "floor_ratio_at_width": d["floor_ratio_at_width"],
        "floor_at_width_s": d["floor_at_width_s"],
        "wall_s": d["wall_s"],
        "speedup_vs_naive": speedup(3),
        "speedup_vs_naive_6": speedup(6),
        "moderator_share": d["moderator_s"] / d["wall_s"],
        **same,
        **layout,
        "first_token_s": first["first_token_s"],
        "batched_decode_tok_s": {m: lim["batched_decode_tok_s"] for m, lim in limits.items()},
        "prompt_tok_s": {m: lim["prompt_tok_s"] for m, lim in limits.items()},
        "constrained_decode_ratio": min(m["ratio"] for m in decode.values()) if decode else None,
        "cache_reuse_ratio": d["cache_reuse_ratio"],
        "model_loads": d["model_loads"],
        "peak_rss_mib": d["peak_rss_mib"],
        "first_token": {"best": first, "runs": firsts},
        "limits": limits,
        "decode": decode,
        "debates": debates,
        "naive": naives,
        "warnings": warnings,
    }
    if a.json:
        print(json.dumps(result, indent=2))
        return
    print(f"localpanel bench · {a.panel} panel · {a.threads} threads · {os.cpu_count()} CPUs" + (" · NOT IDLE" if warnings else ""))
    print(f"\nTime to first token, tiny panel, `python -m localpanel poll` from launch: {first['first_token_s']:.2f} s "
          f"(imports done at {first['to_import_s']:.2f} s; best of {len(firsts)})")
    print("\nLimits, measured now (tokens/s; decode: k sequences, one token each per llama_decode)")
    ks = [str(k) for k in a.widths]
    print(f"  {'model':<22} {'prompt':>8} " + " ".join(f"{'k=' + k:>7}" for k in ks))
    for m, lim in limits.items():
        print(f"  {m:<22} {lim['prompt_tok_s']:>8.1f} " + " ".join(f"{lim['batched_decode_tok_s'][k]:>7.1f}" for k in ks))
    if decode:
        print("\nDecode, same prompt and sampler (tokens/s)")
        print(f"  {'model':<22} {'free':>8} {'ballot':>8} {'ratio':>6}    library: {'free':>6} {'grammar':>8} {'ratio':>6}")
        for name, m in decode.items():
            lib = m["library"]
            print(f"  {name:<22} {m['unconstrained_tok_s']:>8.1f} {m['constrained_tok_s']:>8.1f} {m['ratio']:>6.2f}"
                  f"             {lib['unconstrained_tok_s']:>6.1f} {lib['grammar_tok_s']:>8.1f} {lib['ratio']:>6.2f}")
    print(f"\nFixed debate: {a.panel} panel, 4 participants, seed 7, no early stop, moderator")
    print(f"  {'':<16} {'wall s':>7} {'floor s':>8} {'ratio':>6} {'moderator':>10} {'loads':>5} {'prompt tok':>10} {'ballot tok':>10} {'peak MiB':>9}")
    for r in a.rounds:
        rows = [(f"localpanel x{r}", debates[r])] + ([(f"naive x{r}", naives[r])] if r in naives else [])
        for label, x in rows:
            floor = f"{x['floor_s']:>8.1f} {x['floor_ratio']:>6.2f}" if "floor_s" in x else f"{'-':>8} {'-':>6}"
            print(f"  {label:<16} {x['wall_s']:>7.1f} {floor} {x['moderator_s']:>9.1f}s {x['model_loads']:>5} "
                  f"{x['prompt_tokens_evaluated']:>10} {x['ballot_tokens']:>10} {x['peak_rss_mib']:>9.0f}")
    for r in a.rounds:
        print(f"floor at {r} rounds with as many sequences per decode as the panel seats per model: "
              f"{debates[r]['floor_at_width_s']:.1f} s, ratio {debates[r]['floor_ratio_at_width']:.2f}")
    for r in a.rounds:
        if r in naives:
            print(f"speedup vs naive at {r} rounds: {speedup(r):.2f}x")
    print(f"moderator share of the {main_r}-round debate: {result['moderator_share']:.1%}")
    if same:
        print_same(same)
    if layout:
        print_layout({"conversation": d, **layout})

if __name__ == "__main__":
    main()
