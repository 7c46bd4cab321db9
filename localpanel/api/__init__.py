"""The library API: every command of the CLI is one call here, usable from Python without Click. A run is asked
for by one ``RunRequest`` (request.py), checked once in ``check_run``."""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from localpanel._version import __version__
from localpanel.api.documents import fit, read_documents, reread
from localpanel.api.request import RunRequest
from localpanel.engine.prompting import run_date
from localpanel.engine.runtime import Backend, RuntimeSettings
from localpanel.errors import InputError, LocalpanelError, RunError
from localpanel.panel.moderator import ModeratorReport, moderate
from localpanel.panel.protocol import DebateSettings, Question, Rounds, Seat, Turn
from localpanel.panel.counts import check_covers
from localpanel.runs.events import EventSink, RunEvents, Stop  # noqa: F401  (Stop re-exported: api.Stop keeps working)
from localpanel.runs.transcript import Manifest, ParticipantRecord, Transcript, build_transcript, now, run_id
from localpanel.runs.rundir import RunDir, find_run
from localpanel.weights.registry import ModelSpec, Panel, Registry
from localpanel.weights.store import Store


def _backend(runtime: RuntimeSettings) -> Backend:
    from localpanel.engine.llama import LlamaBackend  # imported late: llama.cpp loads only when a run needs it

    return LlamaBackend(runtime)


def seats_for(registry: Registry, store: Store, panel_name: str | None) -> tuple[list[Seat], str]:
    """The panel's participants with their verified weights (NotPulledError names the pull to run)."""
    panel = registry.panel(panel_name)
    seats = [Seat(p, registry.model(p.model), store.path_for(registry.model(p.model))) for p in panel.participants]
    return seats, panel.name


def panel_runtime(panel: Panel, runtime: RuntimeSettings | None) -> RuntimeSettings:
    """The runtime a run of ``panel`` runs under: the caller's settings, with the panel's memory limit where the
    caller set none. Resolved once, before any backend is built, so that the backend runs as the manifest says."""
    runtime = runtime or RuntimeSettings()
    if runtime.max_memory is None and panel.max_memory:
        runtime = runtime.model_copy(update={"max_memory": parse_size(panel.max_memory)})
    return runtime


@dataclass
class PreparedRun:
    """A run checked and claimed: its directory holds the manifest, and no turn has run yet."""

    run: RunDir
    manifest: Manifest
    seats: list[Seat]

    @property
    def id(self) -> str:
        return self.run.path.name


@dataclass
class CheckedRun:
    """Everything a run is made of, checked (question, panel, weights, context), before anything is written."""

    question: Question
    seats: list[Seat]
    panel: Panel
    moderator: ModelSpec | None
    runtime: RuntimeSettings
    documents: list = ()  # the context files' records, as the seats read them


def check_run(request: RunRequest, *, registry: Registry, store: Store, backend: Backend | None = None) -> CheckedRun:
    """Check every input of a run: raises the error a bad one gives (one sentence), writes nothing, loads no
    weights. What the CLI does before it waits for another run to finish, so that a typo is said at once."""
    request = request.resolved()
    registry, panel = request.seated(registry)
    settings = request.settings
    q = Question.checked(request.question, request.options, request.kind == "integer", request.kind == "open")
    docs = read_documents(list(request.context))
    seats, panel_name = seats_for(registry, store, panel)
    panel_obj = registry.panel(panel_name)
    if settings.seat_weights is not None:
        check_covers(settings.seat_weights, [s.model.name for s in seats], settings.weights_from or "another panel")
    runtime = panel_runtime(panel_obj, request.runtime)
    moderator_spec = registry.model(panel_obj.moderator_model) if request.moderator else None
    if moderator_spec is not None:
        store.path_for(moderator_spec)
    with _backend_for(runtime, backend) as checker:
        q, records = fit(q, docs, seats, settings, checker)
        Rounds(q, seats, settings, checker).check_fits()
    return CheckedRun(q, seats, panel_obj, moderator_spec, runtime, records)


def prepare_run(request: RunRequest, *, registry: Registry, store: Store, backend: Backend | None = None) -> PreparedRun:
    """Check every input (``check_run``) and claim the run directory with its manifest; nothing runs. Under the
    store's runs unless ``request.run_dir``."""
    checked = check_run(request, registry=registry, store=store, backend=backend)
    q, seats, panel_obj, moderator_spec, runtime = (checked.question, checked.seats, checked.panel, checked.moderator,
                                                    checked.runtime)
    settings = request.settings
    with _backend_for(runtime, backend) as described:
        environment = described.describe()
    models = {s.model.name: s.model for s in seats}
    if moderator_spec is not None:
        models[moderator_spec.name] = moderator_spec
    manifest = Manifest(
        kind="poll" if settings.rounds == 1 else "debate",
        id="",
        created_at=now(),
        question=q.text,
        question_kind=q.kind,
        options=q.options,
        documents=list(checked.documents),
        panel=panel_obj,
        participants=[participant_record(s, store.expected_sha(s.model)[0]) for s in seats],
        models=models,
        sha256={name: store.expected_sha(spec)[0] for name, spec in models.items()},
        moderator=moderator_spec.name if moderator_spec else None,
        settings=settings,
        runtime=runtime,
        environment=environment,
    )
    if request.run_dir:
        run = RunDir.create(Path(request.run_dir), manifest)
        store.remember_elsewhere(run.path)  # so that `prune` keeps the weights it names
    else:
        run = RunDir.create_unique(store.runs_dir, run_id(q.text), manifest)
    return PreparedRun(run, run.manifest(), seats)


def run(request: RunRequest, *, registry: Registry, store: Store, backend: Backend | None = None,
        on_event: EventSink | None = None, on_start: Callable[[Path], None] | None = None) -> Transcript:
    """Run a poll (one round) or a debate (several) as ``request`` asks and save it; every input is checked before
    anything is written. ``on_start`` is told the run directory once it is claimed; ``on_event`` gets the run's
    events. A backend given is the caller's; one built here is closed when the run ends."""
    request = request.resolved()
    seated, panel = request.seated(registry)
    request = request.model_copy(update={"runtime": panel_runtime(seated.panel(panel), request.runtime)})
    with _backend_for(request.runtime, backend) as backend:
        prepared = prepare_run(request, registry=registry, store=store, backend=backend)
        if on_start:
            on_start(prepared.run.path)
        return continue_run(prepared.run, prepared.manifest, prepared.seats, backend, store, on_event)


def start_run(question: str, options: Sequence[str] = (), *, registry: Registry, store: Store, panel: str | None = None,
              settings: DebateSettings | None = None, runtime: RuntimeSettings | None = None,
              backend: Backend | None = None, run_dir: Path | None = None, with_moderator: bool = True,
              integer: bool = False, open: bool = False, on_event: EventSink | None = None,
              on_start: Callable[[Path], None] | None = None) -> Transcript:
    """``run`` with the request's fields as arguments."""
    request = RunRequest(question=question, kind="integer" if integer else "open" if open else "options",
                         options=list(options),
                         panel=panel, settings=settings or DebateSettings(), moderator=with_moderator,
                         runtime=runtime or RuntimeSettings(), run_dir=run_dir)
    return run(request, registry=registry, store=store, backend=backend, on_event=on_event, on_start=on_start)


@contextlib.contextmanager
def _backend_for(runtime: RuntimeSettings, backend: Backend | None):
    """The caller's backend, or one of our own for this call, closed when it ends: its models are unloaded, not
    left in memory for every later call to add to."""
    if backend is not None:
        yield backend
        return
    own = _backend(runtime)
    try:
        yield own
    finally:
        own.close()


def participant_record(seat: Seat, sha256: str) -> ParticipantRecord:
    p = seat.participant
    return ParticipantRecord(
        name=p.name, model=seat.model.name, sha256=sha256, persona=p.persona, seed=p.seed,
        temperature=p.temperature, top_k=p.top_k, top_p=p.top_p, min_p=p.min_p, repeat_penalty=p.repeat_penalty,
    )


def manifest_seats(manifest: Manifest, store: Store) -> list[Seat]:
    """Seats rebuilt from a manifest: the exact weights it names, by sha256."""
    return [
        Seat(p, manifest.models[rec.model], store.verified_path(rec.model, rec.sha256))
        for p, rec in zip(manifest.panel.participants, manifest.participants)
    ]


def continue_run(
    run: RunDir,
    manifest: Manifest,
    seats: list[Seat],
    backend: Backend,
    store: Store,
    on_event: EventSink | None = None,
) -> Transcript:
    """Run (or finish) the turns not yet in the journal, then the moderator, then write the transcript. The
    events say what happens, ending with finished, interrupted or failed."""
    with run.lock(), run_date(manifest.created_at):
        events = RunEvents(run.path.name, manifest.options, seats, manifest.settings.rounds, on_event or _ignore)
        try:
            return _continue(run, manifest, seats, backend, store, events)
        except (KeyboardInterrupt, Stop) as exc:
            events.interrupted(str(exc) or "interrupted")
            raise
        except Exception as exc:  # noqa: BLE001 - told to the watchers, then raised as it was
            events.failed(str(exc) or type(exc).__name__)
            raise


def _ignore(event) -> None:
    pass


def _continue(run: RunDir, manifest: Manifest, seats: list[Seat], backend: Backend, store: Store, events: RunEvents) -> Transcript:
    started = time.perf_counter()
    done, report = run.journal(repair=True)
    events.earlier(done)
    earlier = sum(t.seconds + t.rebuild_seconds for t in done) + (report.seconds if report else 0.0)
    q = manifest.asked(reread(manifest.documents, run.path))

    def journaled(turn: Turn) -> None:
        run.append("turn", turn)
        events.turn(turn)

    debate = Rounds(q, seats, manifest.settings, backend, done=done, on_turn=journaled, on_progress=events.progress)
    stopped = debate.run()
    turns = _all_turns(debate)
    if report is None and manifest.moderator:
        report = run_moderator(manifest, turns, stopped, backend, store)
        run.append("moderator", report)
        events.moderator(report)
    transcript = build_transcript(manifest, turns, stopped, report, earlier + time.perf_counter() - started)
    run.write_transcript(transcript)
    result = transcript.result
    events.finished(result.label, result.winner, result.counts, stopped)
    return transcript


def _all_turns(debate: Rounds) -> list[Turn]:
    """Every turn a run made: an open question's proposals (round 0), then the rounds' ballots."""
    return [*debate.proposals.values(), *(t for r in debate.rounds for t in r.values())]


def run_moderator(manifest: Manifest, turns: list[Turn], stopped, backend: Backend, store: Store) -> ModeratorReport:
    preview = build_transcript(manifest, turns, stopped, None, 0.0)
    spec = manifest.models[manifest.moderator]
    path = store.verified_path(spec.name, manifest.sha256[spec.name])
    q = Question(text=manifest.question, options=manifest.options if manifest.question_kind != "open" else preview.options)
    names = [p.name for p in manifest.participants]
    return moderate(q, names, [r.turns for r in preview.rounds], spec, path, backend, manifest.settings.seed,
                    share=manifest.settings.decoder >= 4)


def resume(ref: str | Path, *, store: Store, backend: Backend | None = None, on_event: EventSink | None = None) -> Transcript:
    """Finish an interrupted run with the settings it started with; a finished run is just loaded."""
    run = find_run(ref, store.runs_dir)
    if run.finished:
        return run.transcript()
    manifest = run.manifest()
    same_version(run, manifest, "resume")
    seats = manifest_seats(manifest, store)
    with _backend_for(manifest.runtime, backend) as backend:
        return continue_run(run, manifest, seats, backend, store, on_event)


def list_runs(store: Store) -> list[dict]:
    """The store's runs, oldest first: id, kind, question, result line (or unfinished) and path."""
    if not store.runs_dir.is_dir():
        return []
    return [row for path in sorted(store.runs_dir.iterdir()) if (row := run_row(path)) is not None]


def run_row(path: Path) -> dict | None:
    """One run as ``list_runs`` lists it (None: not a readable run directory)."""
    run = RunDir(path)
    if not run.manifest_path.is_file():
        return None
    try:
        m = run.manifest()
        line = run.transcript().result.line if run.finished else "unfinished (resume it with --resume)"
    except LocalpanelError:
        return None
    return {"id": path.name, "kind": m.kind, "question": m.question, "result": line, "path": str(path),
            "created_at": m.created_at, "state": "finished" if run.finished else "interrupted"}


def load_run(ref: str | Path, store: Store) -> Transcript:
    return find_run(ref, store.runs_dir).transcript()


@dataclass
class Divergence:
    round: int
    participant: str
    index: int
    original: str
    replayed: str


@dataclass
class ReplayReport:
    """A replay's verdict: identical or not, the turns compared, the first divergence and what differs between the
    two machines."""

    identical: bool
    turns_compared: int
    divergence: Divergence | None
    environment_differences: dict[str, tuple[object, object]]
    seconds: float

    def summary(self) -> dict:
        """The verdict as the CLI's --json, the page and MCP all give it."""
        d = self.divergence
        return {
            "identical": self.identical, "turns_compared": self.turns_compared, "seconds": round(self.seconds, 1),
            "divergence": None if d is None else {"round": d.round, "participant": d.participant,
                                                  "at_character": d.index, "original": d.original,
                                                  "replayed": d.replayed},
            "environment_differences": {k: list(v) for k, v in self.environment_differences.items()},
        }


class _Diverged(Exception):
    pass


def replay(ref: str | Path, *, store: Store, backend: Backend | None = None, on_event: EventSink | None = None) -> ReplayReport:
    """Run every turn of a saved run again from its manifest and compare the text, turn by turn."""
    run = find_run(ref, store.runs_dir)
    manifest = run.manifest()
    if not run.finished:
        raise InputError(
            f"{run.path} is unfinished, so there is nothing whole to compare with; finish it first with "
            f"`localpanel {manifest.kind} --resume {run.path}`, then replay it."
        )
    same_version(run, manifest, "replay")
    with run.lock(shared=True), run_date(manifest.created_at), _backend_for(manifest.runtime, backend) as backend:
        return _replay(run, manifest, store, backend, on_event or _ignore)


def same_version(run: RunDir, manifest: Manifest, what: str) -> None:
    """A run resumes and replays only with the localpanel that made it: another one may draw differently."""
    made_by = manifest.environment.get("localpanel")
    if made_by is not None and made_by != __version__:
        raise RunError(
            f"{run.path} was made by localpanel {made_by} and this is {__version__}, which decodes ballots differently; "
            f"{what} it with localpanel {made_by}."
        )


def _replay(run: RunDir, manifest: Manifest, store: Store, backend: Backend | None, on_event: EventSink) -> ReplayReport:
    original, original_report = run.journal()
    if not original:
        raise RunError(f"{run.path} has no finished turns to replay.")
    expected = {(t.round, t.participant): t for t in original}
    seats = manifest_seats(manifest, store)
    events = RunEvents(run.path.name, manifest.options, seats, manifest.settings.rounds, on_event)
    started = time.perf_counter()
    compared = 0
    divergence: Divergence | None = None

    def check(turn: Turn) -> None:
        nonlocal compared, divergence
        want = expected.get((turn.round, turn.participant))
        if want is None:
            divergence = Divergence(turn.round, turn.participant, 0, "(no such turn in the original)", turn.text)
            raise _Diverged
        compared += 1
        events.turn(turn)
        if turn.text != want.text or turn.confidence != want.confidence:
            divergence = Divergence(turn.round, turn.participant, _first_difference(want.text, turn.text), want.text, turn.text)
            raise _Diverged

    debate = Rounds(manifest.asked(reread(manifest.documents, run.path)), seats, manifest.settings, backend,
                    on_turn=check, on_progress=events.progress)
    try:
        stopped = debate.run()
        replayed = {(t.round, t.participant) for t in _all_turns(debate)}
        missing = [t for t in original if (t.round, t.participant) not in replayed]
        if missing:
            divergence = Divergence(missing[0].round, missing[0].participant, 0, missing[0].text, "(the replay stopped before this turn)")
        elif original_report is not None and manifest.moderator:
            turns = _all_turns(debate)
            report = run_moderator(manifest, turns, stopped, backend, store)
            if report.text != original_report.text:
                i = _first_difference(original_report.text, report.text)
                divergence = Divergence(0, "moderator", i, original_report.text, report.text)
    except _Diverged:
        pass
    env_now = backend.describe()
    differences = {
        k: (manifest.environment.get(k), env_now.get(k))
        for k in sorted(set(manifest.environment) | set(env_now))
        if manifest.environment.get(k) != env_now.get(k)
    }
    return ReplayReport(divergence is None, compared, divergence, differences, time.perf_counter() - started)


def _first_difference(a: str, b: str) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def parse_size(text: str | int) -> int:
    """'6GiB', '512MB', '2G' or a number of bytes."""
    if isinstance(text, int):
        return text
    units = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 10**6, "mb": 10**6, "mib": 2**20,
             "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in units:
        raise InputError(f"{text!r} is not a size; write it like 6GiB, 512MB or 2G.")
    return int(float(m.group(1)) * units[m.group(2).lower()])
