"""Running a question set: one ordinary run per question (journaled, resumable, replayable) in an eval directory.

    EVAL_DIR/eval.json             what the eval is: questions (and their sha256), panel, settings, versions
    EVAL_DIR/runs/<n>-<id>/        the debate for question n: every mode is read from it
    EVAL_DIR/reflect/<n>-<id>/     with --modes reflect: the first seat revising its own answer, no peers
    EVAL_DIR/results.json          the report, written at the end (``localpanel eval show`` renders it again)
    EVAL_DIR/samples.jsonl         one line per question: the answer of every mode, as lm-eval keeps samples

Questions are independent jobs handed to an executor: ``LocalExecutor`` (one process, models loaded once) or
``RayExecutor`` (actors on a Ray cluster, each keeping its models loaded). The same seeds give the same runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

import localpanel.api as api
from localpanel._version import __version__
from localpanel.atomic import atomic_write_json, atomic_write_text, fsync_dir
from localpanel.engine.runtime import Backend, RuntimeSettings
from localpanel.errors import InputError, QuestionError, RunError
from localpanel.eval.baselines import sc_model, sc_panel
from localpanel.eval.questions import EvalQuestion, QuestionSet, to_jsonl
from localpanel.eval.weights import Weights
from localpanel.panel.protocol import MAX_ROUNDS, DebateSettings
from localpanel.panel.terms import BallotSettings
from localpanel.runs.transcript import Transcript, legacy_settings
from localpanel.runs.rundir import RunDir, json_field
from localpanel.weights.registry import Panel, Registry
from localpanel.weights.store import Store

Mode = Literal["single", "vote", "weighted", "debate", "reflect", "self-consistency"]
DEFAULT_MODES: list[Mode] = ["single", "vote", "weighted", "debate"]


class EvalSettings(BallotSettings):
    """How an eval runs each question: rounds, seed, modes scored, sampling, the ballot's order, debiasing, views or
    draws, the copy guard and calibrated weights. The ballot's settings are a run's (BallotSettings); with debiasing
    the report also scores round 1 without it, and with drawn votes the same ballots as views."""

    rounds: int = Field(default=2, ge=1, le=MAX_ROUNDS)
    seed: int = Field(default=0, ge=0)
    modes: list[Mode] = Field(default_factory=lambda: list(DEFAULT_MODES))
    # A working of 800 one-character tokens plus the JSON fits: the character limit binds before this does.
    max_tokens: int = Field(default=1024, ge=32, le=4096)
    # Rationale before the vote: models work the question out, then answer (as the debate papers let them).
    reason_first: bool = True
    # Seat weights calibrated on other questions (`localpanel calibrate`): the report scores a calibrated
    # weighted majority and probability vote with them. Kept here, so that the report reads the same later.
    weights: Weights | None = None
    # self-consistency: the model it samples (None: the calibrated weights' most accurate one).
    sc_model: str | None = None


class EvalManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: int = 2  # 2: votes are views unless settings.vote_draw; 1 drew them
    kind: Literal["eval"] = "eval"
    id: str
    created_at: str
    questions: QuestionSet
    panel: Panel
    registry: dict  # the models and panels the runs use, so workers and resumes need no models.yaml
    settings: EvalSettings
    runtime: RuntimeSettings
    localpanel: str = __version__

    _legacy = model_validator(mode="before")(legacy_settings)


class QuestionJob(BaseModel):
    """One question to run: a debate on the panel, or the reflect baseline on its first seat."""

    index: int
    kind: Literal["debate", "reflect", "sc"]
    question: EvalQuestion
    seed: int

    @property
    def dir(self) -> str:
        safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in self.question.id)[:60]
        return f"{ {'debate': 'runs'}.get(self.kind, self.kind)}/{self.index:05d}-{safe}"


def question_seed(eval_seed: int, question_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{eval_seed}|{question_id}".encode()).digest()[:4], "little")


def reflect_panel(panel: Panel) -> Panel:
    return Panel(name=f"{panel.name}-reflect", participants=[panel.participants[0]], moderator=panel.participants[0].model)


class JobFailure(BaseModel):
    """A question that could not run at all (too long for a context, options a model cannot tell apart): recorded in
    its job directory as ``failed.json`` and scored as a question every ballot of which failed."""

    reason: str


FAILED = "failed.json"


def run_job(job: QuestionJob, manifest: EvalManifest, store: Store, backend: Backend, run_dir: Path) -> Transcript | JobFailure:
    """Run one job into ``run_dir`` (finishing it if an earlier attempt was interrupted). A question that cannot
    run (``QuestionError``: too long for a context, options a model cannot tell apart) is recorded as failed,
    with its reason, so that the eval goes on and a resume does not hit it again. Anything else (weights not
    pulled, a registry error, a model that does not load, too little memory) is about the machine: it stops the
    eval and nothing is recorded or deleted, so that a resume where it is fixed runs the question."""
    try:
        return _run_job(job, manifest, store, backend, run_dir)
    except QuestionError as exc:
        failure = JobFailure(reason=str(exc))
        if run_dir.exists() and not _has_journal(run_dir):
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / FAILED, failure.model_dump(mode="json"))
        return failure


def _has_journal(run_dir: Path) -> bool:
    """Whether a run directory holds finished turns: such a directory is never deleted."""
    journal = run_dir / "turns.jsonl"
    return journal.is_file() and journal.stat().st_size > 0


def _run_job(job: QuestionJob, manifest: EvalManifest, store: Store, backend: Backend, run_dir: Path) -> Transcript:
    if (run_dir / "manifest.json").is_file():
        return api.resume(run_dir, store=store, backend=backend)
    if run_dir.exists() and not _has_journal(run_dir):
        shutil.rmtree(run_dir)  # claimed, but killed before its manifest: nothing in it
    registry = Registry.model_validate(manifest.registry)
    s = manifest.settings
    panel = {"debate": manifest.panel, "reflect": reflect_panel(manifest.panel)}.get(job.kind) or \
        sc_panel(manifest.panel, sc_model(manifest.panel, s))
    registry = registry.with_panel(panel)
    sampled = job.kind == "sc"  # self-consistency: one round of samples, each working before its vote
    settings = DebateSettings(**s.model_dump(include=set(BallotSettings.model_fields)), rounds=1 if sampled else s.rounds,
                              seed=job.seed, max_tokens=s.max_tokens, reason_first=s.reason_first or sampled,
                              early_stop=False)
    q = job.question
    return api.start_run(q.question, q.options, registry=registry, store=store, panel=panel.name, settings=settings,
                         runtime=manifest.runtime, run_dir=run_dir, backend=backend, with_moderator=False, integer=q.integer,
                         open=q.open)


OnDone = Callable[[QuestionJob, "Transcript | JobFailure"], None]


class Executor(Protocol):
    name: str

    def run(self, jobs: list[QuestionJob], manifest: EvalManifest, eval_dir: Path, on_done: OnDone) -> None:
        """Run every job and call ``on_done`` as each finishes (in any order)."""

    def close(self) -> None: ...


class LocalExecutor:
    """Runs the jobs one after another in this process, on one backend: each model loads once."""

    name = "local"

    def __init__(self, store: Store, runtime: RuntimeSettings, backend: Backend | None = None):
        self.store = store
        self.backend = backend or api._backend(runtime)

    def run(self, jobs: list[QuestionJob], manifest: EvalManifest, eval_dir: Path, on_done: OnDone) -> None:
        for job in jobs:
            on_done(job, run_job(job, manifest, self.store, self.backend, eval_dir / job.dir))

    def close(self) -> None:
        self.backend.close()


class _RayWorker:
    """A Ray actor: its own backend (models stay loaded across the questions it takes) and store."""

    def __init__(self, home: str | None, runtime: dict):
        from localpanel.engine.llama import LlamaBackend

        self.store = Store(Path(home) if home else None)
        self.backend = LlamaBackend(RuntimeSettings.model_validate(runtime))

    def run(self, job: dict, manifest: dict, journal: dict[str, str]) -> tuple[str, int, dict[str, str]]:
        """Run one job; ``journal`` is what the eval directory already holds of it (its manifest and finished
        turns), so that an interrupted question resumes here instead of starting again."""
        job_, manifest_ = QuestionJob.model_validate(job), EvalManifest.model_validate(manifest)
        registry = Registry.model_validate(manifest_.registry)
        for p in manifest_.panel.participants:  # by sha256 from the same sources, into this worker's store
            self.store.pull(registry.model(p.model))
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = Path(tmp) / Path(job_.dir).name
            run_dir.mkdir()
            for name, text in journal.items():
                atomic_write_text(run_dir / name, text)
            run_job(job_, manifest_, self.store, self.backend, run_dir)
            names = [FAILED] if (run_dir / FAILED).is_file() else ["manifest.json", "turns.jsonl", "transcript.json"]
            files = {name: (run_dir / name).read_text(encoding="utf-8") for name in names}
            return job_.kind, job_.index, files


class RayExecutor:
    """Questions as tasks on Ray actors. Each actor asks Ray for as many CPUs as llama.cpp threads it runs, so no
    core is oversubscribed; workers get weights by sha256 into their own store (or a shared LOCALPANEL_HOME)."""

    name = "ray"

    def __init__(self, runtime: RuntimeSettings, address: str | None = None, num_cpus: int | None = None,
                 workers: int | None = None, home: Path | None = None):
        try:
            import ray
        except ImportError:
            raise InputError("--executor ray needs Ray: pip install 'localpanel[ray]'.") from None
        from localpanel.engine.runtime import physical_cores

        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            try:
                ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError... as it starts
                raise RunError(f"Ray did not start{f' at {address}' if address else ''} ({_first_line(exc)}); "
                               "check --address, or use --executor local.") from None
        threads = runtime.threads or physical_cores()
        runtime = runtime.model_copy(update={"threads": threads})
        cpus = int(ray.cluster_resources().get("CPU", threads))
        if workers and workers * threads > cpus:
            if self.started:
                ray.shutdown()
            raise InputError(
                f"--workers {workers} at {threads} thread{'s' if threads > 1 else ''} each needs {workers * threads} CPUs and "
                f"the Ray cluster has {cpus}; they would wait forever. Use --workers {max(1, cpus // threads)} or fewer "
                "(or fewer --threads)."
            )
        count = workers or max(1, cpus // threads)
        actor = ray.remote(num_cpus=threads)(_RayWorker)
        home = str(home) if home else os.environ.get("LOCALPANEL_HOME")
        self.actors = [actor.remote(home, runtime.model_dump()) for _ in range(count)]

    def run(self, jobs: list[QuestionJob], manifest: EvalManifest, eval_dir: Path, on_done: OnDone) -> None:
        from ray.util import ActorPool

        data = manifest.model_dump(mode="json")
        pool = ActorPool(self.actors)
        by_index = {(j.kind, j.index): j for j in jobs}
        for job in jobs:
            shipped = _journal_files(eval_dir / job.dir)
            pool.submit(lambda a, j, f=shipped: a.run.remote(j.model_dump(mode="json"), data, f), job)
        for _ in jobs:
            try:
                kind, index, files = pool.get_next_unordered()
            except Exception as exc:  # a RayTaskError wraps whatever the worker raised; RayActorError, a lost worker
                raise RunError(f"A Ray worker failed ({_first_line(exc)}); the questions that finished are saved: "
                               f"continue with `localpanel eval --resume {eval_dir}`.") from None
            job = by_index[(kind, index)]
            on_done(job, _place(eval_dir / job.dir, files))

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        if self.started:
            self.ray.shutdown()


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


JOURNAL_FILES = ("manifest.json", "turns.jsonl")


def _journal_files(run_dir: Path) -> dict[str, str]:
    """What a job directory holds of an interrupted run (its manifest and journal), to resume it elsewhere."""
    if not _has_journal(run_dir) or not (run_dir / "manifest.json").is_file():
        return {}
    return {name: (run_dir / name).read_text(encoding="utf-8") for name in JOURNAL_FILES}


def _place(run_dir: Path, files: dict[str, str]) -> Transcript | JobFailure:
    """Put a run a worker made elsewhere into the eval directory: complete, or not at all. A directory that holds
    journaled turns is never removed: the worker resumed from them, so its files are written over them one by one
    (the transcript last, which marks the run finished), and a question that failed there keeps its journal."""
    if _has_journal(run_dir):
        for name in sorted(files, key=lambda n: n == "transcript.json"):
            atomic_write_text(run_dir / name, files[name])
        return finished_at(run_dir)
    tmp = run_dir.with_name(run_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, text in files.items():
        atomic_write_text(tmp / name, text)
    shutil.rmtree(run_dir, ignore_errors=True)
    os.replace(tmp, run_dir)
    fsync_dir(run_dir.parent)
    return finished_at(run_dir)


# -- the eval directory -----------------------------------------------------------------------------------


def eval_id(qs: QuestionSet) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.localtime()) + f"-eval-{qs.name}"[:48]


def create(eval_dir: Path, manifest: EvalManifest) -> None:
    """Claim a new eval directory and write what it is, before any question runs."""
    try:
        eval_dir.mkdir(parents=True)
    except FileExistsError:
        if any(eval_dir.iterdir()):
            raise InputError(f"{eval_dir} already exists and is not empty; resume it with --resume {eval_dir} or choose another --out-dir.") from None
    atomic_write_json(eval_dir / "eval.json", manifest.model_dump(mode="json"))
    atomic_write_text(eval_dir / "questions.jsonl", to_jsonl(manifest.questions.questions))


def load_manifest(eval_dir: Path) -> EvalManifest:
    try:
        return EvalManifest.model_validate_json((eval_dir / "eval.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{eval_dir} is not an eval directory (no eval.json).") from None
    except ValueError as exc:
        raise RunError(f"{eval_dir}/eval.json is damaged or from another localpanel version ({str(exc).splitlines()[0]}).") from None


def jobs_for(manifest: EvalManifest) -> list[QuestionJob]:
    kinds = (["debate"] + (["reflect"] if "reflect" in manifest.settings.modes else [])
             + (["sc"] if "self-consistency" in manifest.settings.modes else []))
    return [
        QuestionJob(index=i, kind=kind, question=q, seed=question_seed(manifest.settings.seed, q.id))
        for i, q in enumerate(manifest.questions.questions)
        for kind in kinds
    ]


def finished(eval_dir: Path, job: QuestionJob) -> Transcript | JobFailure | None:
    return finished_at(eval_dir / job.dir)


def finished_at(path: Path) -> Transcript | JobFailure | None:
    """What a job directory holds once its job is over: the run's transcript, or the reason it could not run."""
    if (path / FAILED).is_file():
        return JobFailure.model_validate_json((path / FAILED).read_text(encoding="utf-8"))
    return RunDir(path).transcript() if (path / "transcript.json").is_file() else None


@contextlib.contextmanager
def eval_lock(eval_dir: Path):
    """Hold an eval directory while it is written (its eval.json, exclusively): a second `eval --resume` of it,
    or `runs rm` of it, is told at once that it is in use."""
    try:
        f = open(Path(eval_dir) / "eval.json", "rb")
    except FileNotFoundError:
        raise RunError(f"{eval_dir} is not an eval directory (no eval.json).") from None
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"{eval_dir} is being written by another localpanel process; wait for it to finish "
                           "(or stop it) and try again.") from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def run_eval(eval_dir: Path, executor: Executor, on_done: OnDone | None = None) -> dict[tuple[str, int], Transcript | JobFailure]:
    """Run (or finish) every job of the eval in ``eval_dir``; jobs already finished are read back, not rerun."""
    with eval_lock(eval_dir):
        return _run_eval(eval_dir, executor, on_done)


def _run_eval(eval_dir: Path, executor: Executor, on_done: OnDone | None) -> dict[tuple[str, int], Transcript | JobFailure]:
    manifest = load_manifest(eval_dir)
    done: dict[tuple[str, int], Transcript | JobFailure] = {}
    todo = []
    for job in jobs_for(manifest):
        t = finished(eval_dir, job)
        if t is None:
            todo.append(job)
        else:
            done[(job.kind, job.index)] = t
    if on_done:
        for job in jobs_for(manifest):
            if (job.kind, job.index) in done:
                on_done(job, done[(job.kind, job.index)])

    def record(job: QuestionJob, t: Transcript | JobFailure) -> None:
        done[(job.kind, job.index)] = t
        if on_done:
            on_done(job, t)

    executor.run(todo, manifest, eval_dir, record)
    return done


def weights_named_by_evals(roots: list[Path]) -> set[str]:
    """The sha256 of every weight an eval under ``roots`` names in its own registry (a resume needs them)."""
    named: set[str] = set()
    for root in roots:
        if root.is_dir():
            for eval_json in root.rglob("eval.json"):
                models = json_field(eval_json, "registry", {}).get("models", {})
                named |= {m["sha256"] for m in models.values() if isinstance(m, dict) and isinstance(m.get("sha256"), str)}
    return named
