"""What the MCP server and the web page call: start, resume and replay runs through one queue, and read them.

A start is checked (question, options, panel, weights, context) and its run directory claimed before the call
returns, so a bad argument is one sentence and a good one is a run id at once; the turns then wait their turn in
the ``RunQueue``. Runs are the ordinary run directories of the store, so `show`, `replay` and `--resume` work on
them, and a run the queue did not start (a CLI run, an earlier server) reads from its directory.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from localpanel import api
from localpanel.engine.runtime import Backend, RuntimeSettings
from localpanel.errors import InputError, LocalpanelError
from localpanel.panel.protocol import DebateSettings
from localpanel.runs.events import EVENT
from localpanel.runs.jobs import Job, MachineLock, RunQueue
from localpanel.runs.transcript import RunDir, build_transcript
from localpanel.show.charts import persuasion_chart, votes_chart
from localpanel.show.render import render
from localpanel.weights.registry import Registry, load_registry, shipped_registry_path, user_registry_path
from localpanel.weights.store import Store

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\Z")


def sentence(exc: BaseException) -> str:
    """An error as the one sentence a user sees (a library error's message is one already)."""
    if isinstance(exc, LocalpanelError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "The machine ran out of memory; try a smaller panel."
    return f"{type(exc).__name__}: {exc}"


class Service:
    def __init__(self, store: Store | None = None, runtime: RuntimeSettings | None = None,
                 registry_file: str | None = None, make_backend: Callable[[RuntimeSettings], Backend] | None = None):
        self.store = store or Store()
        self.runtime = runtime or RuntimeSettings()
        self.registry_file = registry_file
        self.make_backend = make_backend or api._backend
        self.queue = RunQueue(MachineLock.of_store(self.store.home), sentence)
        # The worker's backend, for the runtime of the run it last ran: models stay loaded from one run to the next.
        self.backend: Backend | None = None
        self.backend_runtime: RuntimeSettings | None = None
        self.index = RunIndex(self.store)

    def registry(self) -> Registry:
        """Read again for every start, so that a model the user added meanwhile is found."""
        return load_registry(self.registry_file)

    def close(self) -> None:
        self.queue.stop()
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def _worker_backend(self, runtime: RuntimeSettings) -> Backend:
        """The worker's backend for a run's own runtime (its manifest's: batch and context size, GPU layers,
        memory limit, one at a time), so that a run resumed or replayed here runs as it was made. A run under
        other settings gets a backend of its own; the previous one is closed, so one set of models is loaded."""
        if self.backend is not None and self.backend_runtime != runtime:
            self.backend.close()
            self.backend = None
        if self.backend is None:
            self.backend, self.backend_runtime = self.make_backend(runtime), runtime
        return self.backend

    # -- starting work ----------------------------------------------------------------------------------

    def start(self, question: str, options: list[str] | None = None, *, panel: str | None = None,
              models: list[str] | None = None, rounds: int = 1, seed: int | None = None,
              integer: bool = False, moderator: bool = True) -> Job:
        """Check and claim a run, and queue its turns. Raises InputError (one sentence) on a bad argument."""
        # The limits are the protocol's and the registry's own (Question.checked, DebateSettings, MAX_SEATS); here
        # only what arrives untyped from JSON is checked, each as one sentence.
        if not isinstance(question, str) or not question.strip():
            raise InputError("Give a question.")
        if not isinstance(options, (list, tuple, type(None))) or not all(isinstance(o, str) for o in options or []):
            raise InputError("options must be a list of strings.")
        if panel is not None and not isinstance(panel, str):
            raise InputError("panel must be the name of a panel (a string).")
        if models is not None and (not isinstance(models, (list, tuple)) or not all(isinstance(m, str) for m in models)):
            raise InputError("models must be a list of model names.")
        options = list(options or [])
        if not integer and not options:
            options = ["Yes", "No"]
        if not integer and len(options) == 1:
            raise InputError("A vote needs at least 2 options, got 1; give more, or none for Yes and No.")
        settings = DebateSettings.checked(rounds=rounds, **({"seed": seed} if seed is not None else {}))
        registry = self.registry()
        if models:
            if panel:
                raise InputError("Give either a panel or models, not both.")
            chosen = registry.models_panel(list(models))
            registry, panel = registry.with_panel(chosen), chosen.name
        checker = self.make_backend(self.runtime)  # its own: the worker's may be running a turn meanwhile
        try:
            prepared = api.prepare_run(question, options, registry=registry, store=self.store, panel=panel,
                                       settings=settings, runtime=self.runtime, backend=checker,
                                       with_moderator=moderator, integer=integer)
        finally:
            if checker is not self.backend:
                checker.close()

        def work(sink):
            backend = self._worker_backend(prepared.manifest.runtime)
            return api.continue_run(prepared.run, prepared.manifest, prepared.seats, backend, self.store, sink)

        return self.queue.submit(Job(prepared.id, prepared.manifest.kind, work))

    def resume(self, run_id: str) -> Job:
        run = self.find(run_id)
        if self.queue.busy_with(run.path.name):
            return self.queue.get(run.path.name)
        if run.finished:
            raise InputError(f"Run {run.path.name} has already finished; there is nothing to resume.")
        manifest = run.manifest()
        api.same_version(run, manifest, "resume")
        api.manifest_seats(manifest, self.store)  # weights missing: said now, not from the queue

        def work(sink):
            return api.resume(run.path, store=self.store, backend=self._worker_backend(manifest.runtime), on_event=sink)

        return self.queue.submit(Job(run.path.name, manifest.kind, work), once=True)

    def replay(self, run_id: str) -> Job:
        run = self.find(run_id)
        key = f"{run.path.name}/replay"
        if self.queue.busy_with(key):
            return self.queue.get(key)
        if self.queue.busy_with(run.path.name):
            raise InputError(f"Run {run.path.name} is still running; replay it once it has finished.")

        runtime = run.manifest().runtime

        def work(sink):
            report = api.replay(run.path, store=self.store, backend=self._worker_backend(runtime), on_event=sink)
            return replay_summary(report)

        return self.queue.submit(Job(key, "replay", work), once=True)

    # -- reading ----------------------------------------------------------------------------------------

    def find(self, run_id: str) -> RunDir:
        """A run of this store by id or unique id prefix; never a path, so that a caller reads only runs."""
        if not isinstance(run_id, str) or not _ID.match(run_id):
            raise InputError(f"{str(run_id)[:80]!r} is not a run id; list runs to see them.")
        return api.find_run(run_id, self.store.runs_dir, ids_only=True)

    def snapshot(self, run_id: str) -> dict[str, Any]:
        """A run's state, its ballots so far and, once finished, its result: from the queue while it is there,
        from its directory otherwise."""
        job = self.queue.get(run_id)
        if job is not None and job.kind == "replay":
            return self._job_fields(job)
        run = self.find(run_id)
        job = self.queue.get(run.path.name)
        manifest = run.manifest()
        out: dict[str, Any] = {
            "run_id": run.path.name, "kind": manifest.kind, "question": manifest.question, "options": manifest.options,
            "rounds": manifest.settings.rounds, "participants": [p.name for p in manifest.participants],
            "path": str(run.path), "card_uri": f"localpanel://runs/{run.path.name}/card.md",
        }
        if job is not None and not (job.done and run.finished):
            out.update(self._job_fields(job))
            out["ballots"] = [e.model_dump() for e in job.log.since(0) if e.type == "ballot"]
        elif run.finished:
            out["state"] = "finished"
        else:
            out["state"] = "interrupted"
        if out["state"] == "interrupted":
            out["resume"] = f"localpanel {manifest.kind} --resume {run.path.name}"
        if "ballots" not in out:
            turns, _ = run.journal()
            names = {p.name: p.model for p in manifest.participants}
            out["ballots"] = [{"participant": t.participant, "model": names.get(t.participant), "round": t.round,
                               "vote": t.vote, "rationale": t.rationale, "attributed_to": t.attributed_to,
                               "confidence": t.confidence, "failure": t.failure} for t in turns]
        if out["state"] == "finished" and run.finished:
            t = run.transcript()
            out["result"] = {"line": t.result.line, "label": t.result.label, "winner": t.result.winner,
                             "counts": t.result.counts, "summary": t.summary}
        return out

    def _job_fields(self, job: Job) -> dict[str, Any]:
        out: dict[str, Any] = {"state": job.state, "events": len(job.log.events)}
        if job.state == "queued":
            out["queue_position"] = self.queue.position(job)
            out["waiting_for"] = job.waiting_for or "the run ahead of it in this server's queue"
        if job.error:
            out["error"] = job.error
        if job.kind == "replay":
            out["run_id"], out["kind"] = job.id, "replay"
            if job.result is not None:
                out["replay"] = job.result
        return out

    def events(self, job_id: str, since: int = 0) -> list[dict]:
        job = self.queue.get(job_id)
        return [e.model_dump() for e in job.log.since(since)] if job else []

    def card(self, run_id: str, fmt: str = "markdown") -> str:
        if fmt not in ("markdown", "json", "html", "text"):
            raise InputError(f"Unknown format {fmt!r}: markdown, json, html or text.")
        run = self.find(run_id)
        if not run.finished:
            raise InputError(f"Run {run.path.name} has not finished yet; wait for it, or resume it if it was interrupted.")
        return render(run.transcript(), fmt)

    def live_charts(self, run_id: str) -> dict[str, str]:
        """The votes-over-rounds chart and the who-moved-whom graph of the ballots so far, as inline SVG."""
        run = self.find(run_id)
        manifest = run.manifest()
        turns, _ = run.journal()
        partial = build_transcript(manifest, turns, "max_rounds", None, 0.0)
        return {"votes": votes_chart(partial), "persuasion": persuasion_chart(partial), "rounds": len(partial.rounds)}

    def runs(self, query: str = "", limit: int = 200) -> list[dict]:
        rows = self.index.rows()
        if query:
            words = query.lower().split()
            rows = [r for r in rows if all(w in (r["question"] + " " + r["result"] + " " + r["id"]).lower() for w in words)]
        for r in rows:
            job = self.queue.get(r["id"])
            if job is not None and not job.done:
                r["state"] = job.state
        return rows[-limit:][::-1]

    def catalog(self) -> dict[str, Any]:
        """Panels and models, with where each comes from (the user's own additions included)."""
        registry = self.registry()
        labels = {str(shipped_registry_path()): "shipped", str(user_registry_path()): "yours"}

        def origin(key: str) -> str:
            path = str(registry.origins.get(key, registry.path))
            return labels.get(path, path)

        models = []
        for spec in registry.models.values():
            status = self.store.status(spec)
            models.append({"name": spec.name, "present": status.present, "verified": status.verified,
                           "size": status.size, "from": origin(f"models.{spec.name}"), "description": spec.description})
        panels = [{"name": p.name, "default": p.name == registry.default_panel, "from": origin(f"panels.{p.name}"),
                   "seats": [{"name": s.name, "model": s.model} for s in p.participants],
                   "ready": all(self.store.status(registry.model(s.model)).present for s in p.participants)}
                  for p in registry.panels.values()]
        return {"default_panel": registry.default_panel, "panels": panels, "models": models}


class RunIndex:
    """The store's runs as the search lists them, each row read again only when its files change (a search
    keystroke used to re-read every saved transcript)."""

    def __init__(self, store: Store):
        self.store = store
        self.cache: dict[str, tuple[tuple, dict | None]] = {}

    @staticmethod
    def stamp(path) -> tuple:
        out = []
        for name in ("manifest.json", "transcript.json", "turns.jsonl"):
            try:
                st = (path / name).stat()
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def rows(self) -> list[dict]:
        runs_dir = self.store.runs_dir
        paths = sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []
        out, seen = [], set()
        for path in paths:
            key, stamp = str(path), self.stamp(path)
            seen.add(key)
            cached = self.cache.get(key)
            if cached is None or cached[0] != stamp:
                cached = self.cache[key] = (stamp, api.run_row(path))
            if cached[1] is not None:
                out.append(dict(cached[1]))
        for gone in set(self.cache) - seen:
            del self.cache[gone]
        return out


def replay_summary(report: api.ReplayReport) -> dict[str, Any]:
    d = report.divergence
    return {
        "identical": report.identical, "turns_compared": report.turns_compared, "seconds": round(report.seconds, 1),
        "divergence": None if d is None else {"round": d.round, "participant": d.participant, "at_character": d.index,
                                              "original": d.original[:300], "replayed": d.replayed[:300]},
        "environment_differences": {k: list(v) for k, v in report.environment_differences.items()},
    }


def parse_event(data: dict):
    return EVENT.validate_python(data)
