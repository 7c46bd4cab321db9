"""Starts, resumes and replays runs for the web page and the MCP server, one at a time in a queue, through the
library's own calls (``api.prepare_run`` and ``api.continue_run``, ``api.resume``, ``api.replay``).

A start is checked (question, options, panel, weights, context) and its run directory claimed before the call
returns, so a bad argument is one sentence and a good one is a run id at once; the turns then wait their turn in
the ``RunQueue``.
"""

from __future__ import annotations

from typing import Callable

import localpanel.api as api
from localpanel.engine.runtime import Backend, RuntimeSettings
from localpanel.errors import InputError, LocalpanelError
from localpanel.runs.jobs import Job, JobKey, MachineLock, RunQueue
from localpanel.serve.reader import find
from localpanel.weights.registry import Registry, load_registry
from localpanel.weights.store import Store


def sentence(exc: BaseException) -> str:
    """An error as the one sentence a user sees (a library error's message is one already)."""
    if isinstance(exc, LocalpanelError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "The machine ran out of memory; try a smaller panel."
    return f"{type(exc).__name__}: {exc}"


class RunRunner:
    """The queue's side: what starts work, and the worker's backend it runs on."""

    def __init__(self, store: Store, runtime: RuntimeSettings | None = None, registry_file: str | None = None,
                 make_backend: Callable[[RuntimeSettings], Backend] | None = None):
        self.store = store
        self.runtime = runtime or RuntimeSettings()
        self.registry_file = registry_file
        self.make_backend = make_backend or api._backend
        self.queue = RunQueue(MachineLock.of_store(self.store.home), sentence)
        # The worker's backend, for the runtime of the run it last ran: models stay loaded from one run to the next.
        self.backend: Backend | None = None
        self.backend_runtime: RuntimeSettings | None = None

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

    def start(self, question: str, options: list[str] | None = None, *, panel: str | None = None,
              models: list[str] | None = None, rounds: int = 1, seed: int | None = None,
              integer: bool = False, open: bool = False, context: list[str] | None = None,
              moderator: bool = True) -> Job:
        """Check and claim a run, and queue its turns. Raises InputError (one sentence) on a bad argument."""
        return self.start_request(dict(question=question, options=options, panel=panel, models=models, rounds=rounds,
                                       seed=seed, integer=integer, open=open, context=context, moderator=moderator))

    def start_request(self, data: object) -> Job:
        """``start`` from a request as it arrives (the page's JSON, MCP's arguments), read by ``RunRequest.from_json``."""
        request = api.RunRequest.from_json(data).resolved()
        request = request.model_copy(update={"runtime": self.runtime})
        registry = self.registry()
        seated, panel = request.seated(registry)
        # The run's own runtime (the panel's memory limit resolved), so that the environment the manifest records
        # is the one the worker's backend, built from that runtime, runs under.
        request = request.model_copy(update={"runtime": api.panel_runtime(seated.panel(panel), self.runtime)})
        checker = self.make_backend(request.runtime)  # its own: the worker's may be running a turn meanwhile
        try:
            prepared = api.prepare_run(request, registry=registry, store=self.store, backend=checker)
        finally:
            checker.close()

        def work(sink):
            backend = self._worker_backend(prepared.manifest.runtime)
            return api.continue_run(prepared.run, prepared.manifest, prepared.seats, backend, self.store, sink)

        return self.queue.submit(Job(JobKey(prepared.id), prepared.manifest.kind, work))

    def resume(self, run_id: str) -> Job:
        run = find(self.store, run_id)
        key = JobKey(run.path.name)
        if self.queue.busy_with(key):
            return self.queue.get(key)
        if run.finished:
            raise InputError(f"Run {run.path.name} has already finished; there is nothing to resume.")
        manifest = run.manifest()
        api.same_version(run, manifest, "resume")
        api.manifest_seats(manifest, self.store)  # weights missing: said now, not from the queue

        def work(sink):
            return api.resume(run.path, store=self.store, backend=self._worker_backend(manifest.runtime), on_event=sink)

        return self.queue.submit(Job(key, manifest.kind, work), once=True)

    def replay(self, run_id: str) -> Job:
        run = find(self.store, run_id)
        key = JobKey(run.path.name, "replay")
        if self.queue.busy_with(key):
            return self.queue.get(key)
        if self.queue.busy_with(JobKey(run.path.name)):
            raise InputError(f"Run {run.path.name} is still running; replay it once it has finished.")

        runtime = run.manifest().runtime

        def work(sink):
            report = api.replay(run.path, store=self.store, backend=self._worker_backend(runtime), on_event=sink)
            return report.summary()

        return self.queue.submit(Job(key, "replay", work), once=True)
