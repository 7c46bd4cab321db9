"""localpanel's copying study: what the copy guard does to a debate, from two evals of the same questions.

EVAL_A is run without the guard, EVAL_B with it (`localpanel eval ... --copy-guard N`), both otherwise alike
(panel, seeds, ballot order, rounds). Over the questions both have finished, paired by question id:
- **copied**: the share of rationales after round 1 that share a run of 8 or more (12 or more) words with
  text their seat had read (a peer's or its own earlier rationale, the prompt's wording; not the question or
  the options), ± stderr over questions, and the longest run;
- **valid ballots**, in every round;
- **debate accuracy** (final-round majority) in both, and B - A with the paired stderr;
- **seconds per debate** (the turns' own time; comparable only when both evals ran alone on the machine) and
  the tokens after round 1 (prompt tokens evaluated plus ballot tokens), which do not depend on the machine;
- with --judge, **coherence**: the moderator's model reads each round-2 rationale without its vote and picks,
  grammar-forced and debiased, the option it argues for (as `scripts/positions` does); coherence is the share
  that matches the vote. This loads the judge model and takes a few seconds a rationale.
Reads the evals only. Prints a table, or one JSON object with --json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from localpanel.eval.api import finished_results
from localpanel.eval.runner import finished_at
from localpanel.eval.scores import estimate
from localpanel.panel.protocol import Question


def guard(x: dict) -> str:
    return f"{x['copy_guard']} {x.get('copy_guard_by', 'words')}" if x["copy_guard"] else "off"


def side(eval_dir: Path, ids: list[str]) -> dict:
    manifest, results = finished_results(eval_dir)
    by_id = {r.id: r for r in results}
    rs = [by_id[i] for i in ids]
    copied = [[w for rnd in r.copied for w in rnd] for r in rs]
    share8 = estimate([sum(w >= 8 for w in c) / len(c) for c in copied if c])
    share12 = estimate([sum(w >= 12 for w in c) / len(c) for c in copied if c])
    ballots = [v for r in rs for rnd in r.votes for v in rnd]
    return {
        "eval": str(eval_dir), "copy_guard": manifest.settings.copy_guard,
        "copy_guard_by": manifest.settings.copy_guard_by, "questions": len(rs),
        "rationales_after_round_1": sum(len(c) for c in copied),
        "copied_8": share8.model_dump(), "copied_12": share12.model_dump(),
        "longest_run": max((w for c in copied for w in c), default=0),
        "valid_ballots": sum(v is not None for v in ballots), "ballots": len(ballots),
        "debate": estimate([r.scores()["debate"] for r in rs]).model_dump(),
        "debate_scores": [r.scores()["debate"] for r in rs],
        "seconds_per_debate": sum(sum(r.seconds) for r in rs) / max(1, len(rs)),
        "round_2_tokens_per_debate": sum(sum(r.tokens[1:]) for r in rs) / max(1, len(rs)),
    }


def coherence(eval_dir: Path, ids: list[str], backend, store, registry) -> dict:
    from localpanel.panel.coherence import judge

    manifest, _ = finished_results(eval_dir)
    panel = manifest.panel
    spec = registry.model(panel.moderator_model)
    path = store.path_for(spec)
    index = {q.id: i for i, q in enumerate(manifest.questions.questions)}
    per_q = []
    for qid in ids:
        run = next((eval_dir / "runs").glob(f"{index[qid]:05d}-*"), None)
        t = finished_at(run) if run is not None else None
        if t is None or not hasattr(t, "rounds") or len(t.rounds) < 2:
            continue
        turns = [x for x in t.rounds[1].turns if x.valid]
        readings = judge(Question(text=t.question, options=t.options), turns, spec, path, backend, seed=0)
        judged = [r for r in readings if r.read_as is not None]
        if judged:
            per_q.append(sum(r.coherent for r in judged) / len(judged))
    return estimate(per_q).model_dump()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("eval_a", type=Path, help="the eval without the guard")
    ap.add_argument("eval_b", type=Path, help="the same eval with --copy-guard N")
    ap.add_argument("--judge", action="store_true", help="also judge the coherence of the round-2 rationales")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    started = time.perf_counter()
    ids_a = {r.id for r in finished_results(a.eval_a)[1]}
    ids = [r.id for r in finished_results(a.eval_b)[1] if r.id in ids_a]
    if not ids:
        print("The two evals have no finished question in common.", file=sys.stderr)
        return 2
    out = {"questions": len(ids), "a": side(a.eval_a, ids), "b": side(a.eval_b, ids)}
    diffs = [b - x for x, b in zip(out["a"].pop("debate_scores"), out["b"].pop("debate_scores"))]
    out["debate_b_minus_a"] = estimate(diffs).model_dump()
    if a.judge:
        from localpanel.engine.llama import LlamaBackend
        from localpanel.engine.runtime import RuntimeSettings
        from localpanel.weights.registry import load_registry
        from localpanel.weights.store import Store

        store, registry = Store(), load_registry()
        backend = LlamaBackend(RuntimeSettings())
        try:
            for k, d in (("a", a.eval_a), ("b", a.eval_b)):
                out[k]["coherence_round_2"] = coherence(d, ids, backend, store, registry)
        finally:
            backend.close()
    out["seconds"] = round(time.perf_counter() - started, 1)
    if a.json:
        print(json.dumps(out, indent=2))
        return 0

    def pct(e: dict) -> str:
        return f"{100 * e['value']:.1f}% ± {100 * (e['stderr'] or 0):.1f}"

    A, B = out["a"], out["b"]
    rows = [
        ("copy guard", guard(A), guard(B)),
        ("rationales after round 1", str(A["rationales_after_round_1"]), str(B["rationales_after_round_1"])),
        ("share a run of 8+ words with earlier text", pct(A["copied_8"]), pct(B["copied_8"])),
        ("share a run of 12+ words", pct(A["copied_12"]), pct(B["copied_12"])),
        ("longest shared run (words)", str(A["longest_run"]), str(B["longest_run"])),
        ("valid ballots", f"{A['valid_ballots']} / {A['ballots']}", f"{B['valid_ballots']} / {B['ballots']}"),
        ("debate accuracy", pct(A["debate"]), pct(B["debate"])),
        ("seconds per debate (as each eval measured it)", f"{A['seconds_per_debate']:.1f}", f"{B['seconds_per_debate']:.1f}"),
        ("tokens per debate after round 1 (evaluated + decoded)", f"{A['round_2_tokens_per_debate']:.0f}",
         f"{B['round_2_tokens_per_debate']:.0f}"),
    ]
    if a.judge:
        rows.append(("coherence of round-2 rationales", pct(A["coherence_round_2"]), pct(B["coherence_round_2"])))
    print(f"localpanel copying study · {len(ids)} questions both evals finished")
    print(f"| | {A['eval']} | {B['eval']} |\n|---|---:|---:|")
    for name, x, y in rows:
        print(f"| {name} | {x} | {y} |")
    d = out["debate_b_minus_a"]
    print(f"debate accuracy, B − A: {100 * d['value']:+.1f} ± {100 * (d['stderr'] or 0):.1f} points (paired)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
