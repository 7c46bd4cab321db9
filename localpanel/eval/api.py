"""The eval stage's library API: every `localpanel eval` command is one call here."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from localpanel.api import panel_runtime
from localpanel.atomic import atomic_write_json, atomic_write_text
from localpanel.engine.runtime import RuntimeSettings
from localpanel.errors import InputError
from localpanel.eval import benchmarks
from localpanel.eval.baselines import sc_model
from localpanel.eval.questions import QuestionSet, load_source
from localpanel.eval.report import Report, build_report
from localpanel.eval.results import QuestionResult, failed_question, read_question
from localpanel.eval.runner import (
    EvalManifest,
    EvalSettings,
    Executor,
    JobFailure,
    QuestionJob,
    create,
    eval_id,
    finished,
    jobs_for,
    load_manifest,
    run_eval,
    weights_named_by_evals,
)
from localpanel.eval.weights import Weights, from_results
from localpanel.runs.transcript import now
from localpanel.runs.rundir import weights_named_by_runs
from localpanel.weights.registry import Panel, Registry
from localpanel.weights.store import Store

Progress = Callable[[int, int, dict[str, float]], None]  # questions done, total, accuracy so far per mode


def question_set(source: str, seed: int, store: Store) -> QuestionSet:
    """A JSONL file, ``arithmetic:N`` (generated from the seed), or a benchmark: ``gsm8k:N``, ``arc-challenge:A-B``."""
    if (bench := benchmarks.parse(source)) is not None:
        return benchmarks.load_benchmark(*bench, store.home / "datasets")
    return load_source(source, seed)


def prepare(questions: QuestionSet, *, registry: Registry, store: Store, panel: Panel, settings: EvalSettings,
            runtime: RuntimeSettings, out_dir: Path | None) -> Path:
    """Check everything (weights present, questions valid) and create the eval directory; nothing runs yet."""
    for p in panel.participants:
        store.path_for(registry.model(p.model))  # NotPulledError names the pull to run
    if settings.weights is not None:
        settings.weights.check_covers([p.model for p in panel.participants])
        settings.weights.check_disjoint(questions.questions)  # never scored on the questions it was calibrated on
    if "self-consistency" in settings.modes:  # the model it samples, resolved and kept in the manifest
        settings = settings.model_copy(update={"sc_model": sc_model(panel, settings)})
    if "weighted" in settings.modes and all(q.integer for q in questions.questions):
        settings = settings.model_copy(update={"modes": [m for m in settings.modes if m != "weighted"]})
    eval_dir = Path(out_dir) if out_dir else store.home / "evals" / eval_id(questions)
    runtime = panel_runtime(panel, runtime)  # the panel's memory limit, applied by every backend the eval builds
    manifest = EvalManifest(id=eval_dir.name, created_at=now(), questions=questions, panel=panel,
                            registry=registry.with_panel(panel).model_dump(mode="json"), settings=settings, runtime=runtime)
    create(eval_dir, manifest)
    store.remember_elsewhere(eval_dir)  # an --out-dir outside the store: `prune` keeps the weights it names
    return eval_dir


def executor(eval_dir: Path, store: Store, kind: str = "local", *, address: str | None = None,
             workers: int | None = None) -> Executor:
    """The executor an eval runs on, built from the runtime its manifest resolved (the panel's memory limit
    included), for a new eval and a resumed one alike, so that what runs is what the manifest says."""
    from localpanel.eval.runner import LocalExecutor, RayExecutor

    runtime = load_manifest(eval_dir).runtime
    if kind == "ray":
        return RayExecutor(runtime, address=address, workers=workers)
    return LocalExecutor(store, runtime)


def evaluate(source: str, *, panel: Panel, registry: Registry, store: Store, settings: EvalSettings | None = None,
             runtime: RuntimeSettings | None = None, out_dir: Path | None = None, executor_kind: str = "local",
             address: str | None = None, workers: int | None = None, on_start: Callable[[Path], None] | None = None,
             on_progress: Progress | None = None) -> Report:
    """Score ``panel`` on a question set (a JSONL file, ``arithmetic:N``, ``gsm8k:N``, ``arc-challenge:A-B``): every
    question a debate, every mode read from it; the report is also written into the eval directory, which
    ``on_start`` is told once it is claimed (``resume_eval`` finishes it after an interruption)."""
    settings = settings or EvalSettings()
    eval_dir = prepare(question_set(source, settings.seed, store), registry=registry, store=store, panel=panel,
                       settings=settings, runtime=runtime or RuntimeSettings(), out_dir=out_dir)
    if on_start:
        on_start(eval_dir)
    return resume_eval(eval_dir, store=store, executor_kind=executor_kind, address=address, workers=workers,
                       on_progress=on_progress)


def resume_eval(eval_dir: Path, *, store: Store, executor_kind: str = "local", address: str | None = None,
                workers: int | None = None, on_progress: Progress | None = None) -> Report:
    """Run (or finish) the eval in ``eval_dir`` on its own runtime; finished questions are never run again."""
    runner = executor(eval_dir, store, executor_kind, address=address, workers=workers)
    try:
        return run(eval_dir, runner, on_progress)
    finally:
        runner.close()


def calibrate(source: str, *, registry: Registry, store: Store, panel: Panel | None = None, seed: int = 0,
              reason_first: bool = True, runtime: RuntimeSettings | None = None, out: Path | None = None,
              on_start: Callable[[Path], None] | None = None) -> tuple[Weights, Path]:
    """Weigh each model of ``panel`` by how often its seats are right on held-out questions, and save the weights
    (to ``out``, default the store's weights/PANEL.json, which ``--weights PANEL`` reads). ``source`` is a question
    set, run here as a one-round eval (``on_start`` is told its directory), or an eval directory, whose finished
    round-1 ballots are read without running anything."""
    from localpanel.eval.weights import save, weights_path

    if (Path(source) / "eval.json").is_file():
        weights = weights_from_eval(Path(source))
        if panel is not None and panel.name != weights.panel:
            raise InputError(f"{source} is an eval of panel {weights.panel}: leave out the panel and models, the "
                             "weights are that panel's.")
    else:
        panel = panel or registry.panel()
        questions = question_set(source, seed, store)
        if all(q.integer for q in questions.questions):
            raise InputError("Calibration needs questions with options (an integer answer has no chance level to weigh against).")
        eval_dir = prepare(questions, registry=registry, store=store, panel=panel, runtime=runtime or RuntimeSettings(),
                           settings=EvalSettings(rounds=1, seed=seed, modes=["single", "vote"], reason_first=reason_first),
                           out_dir=None)
        if on_start:
            on_start(eval_dir)
        resume_eval(eval_dir, store=store)
        _, results = finished_results(eval_dir)
        weights = from_results(panel, questions.source, questions.questions, results)
    return weights, save(weights, out or weights_path(store.home, weights.panel))


def weights_in_use(store: Store, keep: list[Path] = ()) -> set[str]:
    """The sha256 of every weight a saved run or eval names (under the store, made elsewhere and listed, or under
    ``keep``): what `prune` must keep, asked here, above the runs and the evals that know their own files."""
    roots = store.saved_roots(keep)
    return weights_named_by_runs(roots) | weights_named_by_evals(roots)


def run(eval_dir: Path, executor: Executor, on_progress: Progress | None = None) -> Report:
    """Run (or resume) the eval in ``eval_dir`` and write its report; finished questions are never rerun."""
    manifest = load_manifest(eval_dir)
    started = time.perf_counter()
    wanted = {(j.kind, j.index) for j in jobs_for(manifest)}
    done: dict[tuple[str, int], object] = {}
    results: dict[int, QuestionResult] = {}

    def on_done(job: QuestionJob, transcript) -> None:
        done[(job.kind, job.index)] = transcript
        result = _result(manifest, job.index, done, wanted)
        if result is not None:
            results[job.index] = result
            if on_progress:
                scores = [r.scores() for r in results.values()]
                so_far = {m: sum(x) / len(x) for m in manifest.settings.modes if (x := [s[m] for s in scores if m in s])}
                on_progress(len(results), len(manifest.questions.questions), so_far)

    run_eval(eval_dir, executor, on_done)
    report = build_report(manifest, list(results.values()), time.perf_counter() - started)
    write(eval_dir, report, list(results.values()))
    return report


def _result(manifest, index: int, done: dict, wanted: set) -> QuestionResult | None:
    """A question's result once every job it needs is over (its debate, and its reflect and self-consistency runs
    if asked for). Those are scored on their own merits, whatever happened to the debate."""
    q = manifest.questions.questions[index]
    debate = done.get(("debate", index))
    extra = {kind: done.get((kind, index)) for kind in ("reflect", "sc") if (kind, index) in wanted}
    if debate is None or any(t is None for t in extra.values()):
        return None
    if isinstance(debate, JobFailure):
        names = [p.name for p in manifest.panel.participants]
        result = failed_question(index, q, names, manifest.settings.rounds, debate.reason)
    else:
        result = read_question(index, q, debate, None)
    for kind, t in extra.items():
        read = None if isinstance(t, JobFailure) else read_question(index, q, t, None)
        tokens, seconds = (sum(read.tokens), sum(read.seconds)) if read else (0, 0.0)
        if kind == "reflect":
            result.reflect = [v[0] for v in read.votes] if read else [None]
            result.reflect_tokens, result.reflect_seconds = tokens, seconds
        else:
            result.sc = read.votes[0] if read else [None] * len(manifest.panel.participants)
            result.sc_tokens, result.sc_seconds = tokens, seconds
    return result


def finished_results(eval_dir: Path) -> tuple[EvalManifest, list[QuestionResult]]:
    """An eval's manifest and the results of its questions finished so far, read from their runs (reads only)."""
    if not (Path(eval_dir) / "eval.json").is_file():
        raise InputError(f"{eval_dir} is not an eval directory (it has no eval.json).")
    manifest = load_manifest(eval_dir)
    jobs = jobs_for(manifest)
    wanted = {(j.kind, j.index) for j in jobs}
    done = {(j.kind, j.index): t for j in jobs if (t := finished(eval_dir, j)) is not None}
    results = [r for i in range(len(manifest.questions.questions)) if (r := _result(manifest, i, done, wanted)) is not None]
    if not results:
        raise InputError(f"{eval_dir} has no finished question yet: continue it with `localpanel eval --resume {eval_dir}`.")
    return manifest, results


def weights_from_eval(eval_dir: Path) -> Weights:
    """Weights from the round-1 ballots of an eval's finished questions (reads the eval only)."""
    manifest, results = finished_results(eval_dir)
    if all(q.integer for q in manifest.questions.questions):
        raise InputError(f"{eval_dir} is an eval of questions without options: calibration needs options (an integer "
                         "answer has no chance level to weigh against).")
    questions = [manifest.questions.questions[r.index] for r in results]
    total = len(manifest.questions.questions)
    source = (f"{manifest.questions.source}, round 1 of eval {Path(eval_dir).name}"
              + (f" ({len(results)} of {total} questions finished)" if len(results) < total else ""))
    return from_results(manifest.panel, source, questions, results)


def partial_report(eval_dir: Path) -> Report:
    """The report of an unfinished eval over the questions finished so far (``source`` says how many); reads
    only, writes nothing."""
    manifest, results = finished_results(eval_dir)
    report = build_report(manifest, results, 0.0)
    total = len(manifest.questions.questions)
    return report.model_copy(update={"source": f"{report.source} · UNFINISHED: {len(results)} of {total} questions so far"})


def compare_evals(a: Path, b: Path):
    """Two evals of the same questions side by side, paired over the questions both have finished (reads only)."""
    from localpanel.eval.compare import compare

    return compare((str(a), *finished_results(a)), (str(b), *finished_results(b)))


def write(eval_dir: Path, report: Report, results: list[QuestionResult]) -> None:
    samples = []
    for r in sorted(results, key=lambda r: r.index):
        samples.append(json.dumps({"index": r.index, "id": r.id, "answer": r.answer, "scores": r.scores(), "votes": r.votes,
                                   "reflect": r.reflect}, ensure_ascii=False) + "\n")
    atomic_write_text(eval_dir / "samples.jsonl", "".join(samples))
    atomic_write_json(eval_dir / "results.json", report.model_dump(mode="json"))


def load_report(eval_dir: Path) -> Report:
    path = Path(eval_dir) / "results.json"
    try:
        return Report.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if (Path(eval_dir) / "eval.json").is_file():
            return partial_report(Path(eval_dir))
        raise InputError(f"{eval_dir} is not an eval directory (it has no eval.json).") from None
