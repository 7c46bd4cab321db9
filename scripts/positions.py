"""localpanel's position study: does the typing order change a result, how much do the models follow the
position an option is shown in, and do the rationales argue for their votes?

For each of 20 opinion questions, a poll on the panel at one seed, with its options typed in 3 orders:
- **invariance**: the ballots (votes, probabilities, tokens) and the result must be identical in all three;
- **position effect**: the share of votes for the option shown first and shown last, against chance, as voted
  (debiased) and as the order shown alone would have voted (the same draw from the raw probabilities);
- **coherence**: the moderator's model reads each rationale without its vote and picks, grammar-forced and
  debiased, the option it argues for; coherence is the share that matches the vote.
With --reason-first the same questions are also polled once with reason-first ballots, for the comparison.
With --draw they are also polled once with votes drawn at each seat's temperature (--vote-draw): in vote-first
ballots the vote's probabilities come before any sampled text, so these are the same probabilities, read as a
draw instead of as each seat's most probable option; the study counts the questions whose result differs, and
judges the coherence of both.
Runs one poll at a time in one process (models load once). Prints a table, or one JSON object with --json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from localpanel import api
from localpanel.engine.draw import rotate
from localpanel.engine.llama import LlamaBackend
from localpanel.engine.runtime import RuntimeSettings, busy_warning, physical_cores
from localpanel.panel.coherence import judge
from localpanel.panel.protocol import DebateSettings, Question
from localpanel.weights.registry import load_registry
from localpanel.weights.store import Store

QUESTIONS: list[tuple[str, list[str]]] = [
    ("Which database for a 10 GB analytics job?", ["DuckDB", "PostgreSQL", "SQLite"]),
    ("Should a five-person startup move its app to Kubernetes now?", ["Yes", "No", "Not yet"]),
    ("Tabs or spaces for indentation?", ["Tabs", "Spaces"]),
    ("Which language should a beginner learn first?", ["Python", "JavaScript", "C", "Scratch"]),
    ("Is it hypocrisy that AI labs complain about distillation while training on unlicensed content?", ["Yes", "No"]),
    ("Should code review be required for every change?", ["Always", "Only for risky changes", "Never"]),
    ("Which is the better default for a new web API?", ["REST", "GraphQL", "gRPC"]),
    ("Should cities ban cars from their centres?", ["Yes", "No", "Partly"]),
    ("Monorepo or many repositories for a team of 30?", ["Monorepo", "Many repositories"]),
    ("What should a small team use for its first message queue?", ["RabbitMQ", "Kafka", "Redis streams", "PostgreSQL"]),
    ("Is remote work better for software teams than office work?", ["Remote", "Office", "Hybrid"]),
    ("Should unit tests mock the database?", ["Yes", "No"]),
    ("Which editor should a new developer start with?", ["VS Code", "Vim", "Emacs", "JetBrains IDE"]),
    ("Should a four-day work week become the norm?", ["Yes", "No", "Only in some jobs"]),
    ("Static or dynamic typing for a large codebase?", ["Static", "Dynamic", "Gradual"]),
    ("Is nuclear power a good way to cut carbon emissions?", ["Yes", "No"]),
    ("Which should a data team store its raw events in?", ["Parquet files", "A relational database", "JSON logs"]),
    ("Should social media be banned for children under 14?", ["Yes", "No", "Only with parental consent"]),
    ("Rewrite a legacy service or refactor it step by step?", ["Rewrite", "Refactor step by step"]),
    ("What matters most in a code review?", ["Correctness", "Readability", "Performance", "Security"]),
]


def orders(options: list[str]) -> list[list[str]]:
    """The options as typed, reversed, and rotated by one: three typing orders."""
    return [options, list(reversed(options)), rotate(options, 1)]


def ballots(t) -> list[tuple]:
    return [(x.participant, x.vote, x.confidence, x.raw_confidence, x.option_order, x.tokens) for r in t.rounds for x in r.turns]


def positions(turns, temperature) -> dict[str, float]:
    from localpanel.panel.tally import undebiased_vote

    valid = [x for x in turns if x.valid]
    plain = [undebiased_vote(x, temperature[x.participant]) for x in valid]
    return {
        "ballots": len(valid),
        "chance": float(np.mean([1 / len(x.option_order) for x in valid])),
        "first": sum(x.vote == x.option_order[0] for x in valid),
        "last": sum(x.vote == x.option_order[-1] for x in valid),
        "first_shown_order": sum(v == x.option_order[0] for v, x in zip(plain, valid)),
        "last_shown_order": sum(v == x.option_order[-1] for v, x in zip(plain, valid)),
    }


def share(rows: list[dict], key: str) -> tuple[float, float]:
    """The pooled share of ballots, and its standard error over questions (clustered by question)."""
    per_q = [r[key] / r["ballots"] for r in rows if r["ballots"]]
    n = len(per_q)
    return float(np.mean(per_q)), float(np.std(per_q, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--panel", default="default", help="panel to poll (default: default)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--questions", type=int, default=len(QUESTIONS), help="how many of the 20 questions")
    ap.add_argument("--reason-first", action="store_true", help="also poll each question once with reason-first ballots")
    ap.add_argument("--draw", action="store_true", help="also poll each question once with drawn votes (--vote-draw)")
    ap.add_argument("--orders", type=int, default=3, choices=(1, 2, 3), help="typing orders per vote-first poll (default 3)")
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    registry, store = load_registry(), Store()
    panel = registry.panel(a.panel)
    judge_spec = registry.model(panel.moderator_model)
    judge_path = store.path_for(judge_spec)
    if (warning := busy_warning(a.threads)) is not None:
        print(f"warning: {warning}", file=sys.stderr)
    styles = {"vote-first": False} | ({"reason-first": True} if a.reason_first else {}) | ({"drawn": False} if a.draw else {})
    rows: dict[str, list[dict]] = {style: [] for style in styles}
    mismatches: list[str] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as runs, LlamaBackend(RuntimeSettings(threads=a.threads)) as backend:
        for qi, (question, options) in enumerate(QUESTIONS[: a.questions]):
            for style, reason_first in styles.items():
                settings = DebateSettings(seed=a.seed, reason_first=reason_first, vote_draw=style == "drawn")
                typed = orders(options)[: a.orders] if style == "vote-first" else [options]
                results = []
                for k, opts in enumerate(typed):
                    t0 = time.perf_counter()
                    results.append(api.start_run(question, opts, registry=registry, store=store, panel=a.panel, backend=backend,
                                                 settings=settings, with_moderator=False,
                                                 run_dir=Path(runs) / f"{qi}-{style}-{k}"))
                    seconds = time.perf_counter() - t0
                    print(f"[{time.perf_counter() - started:6.0f} s] q{qi + 1} {style} order {k + 1}: "
                          f"{results[-1].result.line} ({seconds:.1f} s)", file=sys.stderr, flush=True)
                t = results[0]
                same = all(ballots(r) == ballots(t) and (r.result.line, r.result.counts) == (t.result.line, t.result.counts)
                           for r in results[1:])
                if not same:
                    mismatches.append(f"q{qi + 1} {style}")
                temperature = {p.name: settings.vote_temperature(p.temperature) for p in t.participants}
                turns = t.rounds[0].turns
                readings = judge(Question(text=question, options=options), turns, judge_spec, judge_path, backend, seed=a.seed)
                rows[style].append({
                    "question": question, "options": options, "identical_in_all_orders": same, "orders": len(typed),
                    "result": t.result.line, "coherent": sum(r.coherent for r in readings),
                    "judged": sum(r.read_as is not None for r in readings),
                    "readings": [r.model_dump() for r in readings], "seconds": round(sum(r.seconds for r in results), 1),
                    "drawn_against_view": sum(x.valid and x.vote != x.view for x in turns),
                    **positions(turns, temperature),
                })
                if style == "drawn":
                    views = rows["vote-first"][-1]
                    rows[style][-1]["same_result_as_views"] = t.result.line.split(";")[0] == views["result"].split(";")[0]
    summary = {}
    for style, rs in rows.items():
        summary[style] = {
            "questions": len(rs),
            "identical_in_all_orders": sum(r["identical_in_all_orders"] for r in rs),
            "ballots": sum(r["ballots"] for r in rs),
            "chance": float(np.mean([r["chance"] for r in rs])) if rs else None,
            "first": share(rs, "first"), "last": share(rs, "last"),
            "first_shown_order": share(rs, "first_shown_order"), "last_shown_order": share(rs, "last_shown_order"),
            "coherence": sum(r["coherent"] for r in rs) / max(1, sum(r["judged"] for r in rs)),
            "coherence_per_question": share([{**r, "ballots": r["judged"]} for r in rs], "coherent"),
            "seconds_per_poll": float(np.mean([r["seconds"] / r["orders"] for r in rs])) if rs else None,
            "drawn_against_view": sum(r["drawn_against_view"] for r in rs),
        }
        if style == "drawn":
            summary[style]["result_differs_from_views"] = sum(not r["same_result_as_views"] for r in rs)
    out = {"panel": a.panel, "seed": a.seed, "judge": judge_spec.name, "summary": summary, "mismatches": mismatches,
           "rows": rows, "seconds": round(time.perf_counter() - started, 1)}
    if a.json:
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        print(f"localpanel position study · panel {a.panel} · seed {a.seed} · judge {judge_spec.name} · {out['seconds']:.0f} s")
        for style, s in summary.items():
            pct = lambda v: f"{100 * v[0]:.0f}% ± {100 * v[1]:.0f}"  # noqa: E731
            print(f"\n{style}: {s['questions']} questions, {s['ballots']} ballots")
            if style == "vote-first" and a.orders > 1:
                print(f"  identical in all {a.orders} typing orders: {s['identical_in_all_orders']}/{s['questions']}")
            if style == "drawn":
                print(f"  votes against their seat's most probable option: {s['drawn_against_view']} of {s['ballots']}")
                print(f"  result differs from the votes-as-views poll: {s['result_differs_from_views']} of {s['questions']} questions")
            print(f"  votes for the option shown first: {pct(s['first'])} debiased, {pct(s['first_shown_order'])} in the "
                  f"order shown alone (chance {100 * s['chance']:.0f}%)")
            print(f"  votes for the option shown last:  {pct(s['last'])} debiased, {pct(s['last_shown_order'])} in the order shown alone")
            print(f"  coherence (the judge reads the rationale as arguing for the vote): {100 * s['coherence']:.0f}%")
            print(f"  seconds per poll: {s['seconds_per_poll']:.1f}")
        if mismatches:
            print(f"\nNOT identical across typing orders: {', '.join(mismatches)}")
    sys.exit(1 if mismatches else 0)


if __name__ == "__main__":
    main()
