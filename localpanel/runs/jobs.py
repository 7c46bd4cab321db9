"""One run at a time on this machine: a queue of jobs, each with its own log of run events.

Two llama.cpp runs on the same cores are 10-100x slower than one after the other, so the MCP server and the web
page hand their work to a ``RunQueue``: one worker thread takes the jobs in order, and it holds the machine's
run lock (a file lock under the store) while a job runs, so that two servers on one machine queue as well.
Watchers read a job's ``EventLog`` from any thread; nothing here knows what a poll is.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel

from localpanel.runs.events import Stop

State = Literal["queued", "running", "finished", "interrupted", "failed"]
DONE: tuple[State, ...] = ("finished", "interrupted", "failed")


class EventLog:
    """Events in the order they happened; readers wait for the next one with ``wait``."""

    def __init__(self) -> None:
        self.events: list[BaseModel] = []
        self.changed = threading.Condition()

    def append(self, event: BaseModel) -> None:
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def since(self, seq: int) -> list[BaseModel]:
        with self.changed:
            return self.events[seq:]

    def wait(self, seq: int, timeout: float) -> None:
        """Until there are more than ``seq`` events, or ``timeout`` seconds (or a ``poke``)."""
        with self.changed:
            if len(self.events) <= seq:
                self.changed.wait(timeout)

    def poke(self) -> None:
        with self.changed:
            self.changed.notify_all()


@dataclass(frozen=True)
class JobKey:
    """Which job: the run it works on, and what it does to it (a run started or resumed, or a replay of it).
    A run and its replay are two jobs on one run, never two run ids."""

    run: str
    action: Literal["run", "replay"] = "run"

    @property
    def handle(self) -> str:
        """How a client names the job: the run id, or RUN/replay for its replay (the web page's URL shape)."""
        return self.run if self.action == "run" else f"{self.run}/{self.action}"

    @classmethod
    def parse(cls, handle: str) -> "JobKey":
        run, sep, action = str(handle).partition("/")
        return cls(run, "replay") if sep and action == "replay" else cls(str(handle))


@dataclass
class Job:
    """A piece of work on one run and what became of it."""

    key: JobKey
    kind: str  # the run's kind (poll, debate) or "replay"
    work: Callable[[Callable[[BaseModel], None]], Any]
    state: State = "queued"
    waiting_for: str | None = None
    error: str | None = None
    result: Any = None
    log: EventLog = field(default_factory=EventLog)
    queued_at: float = field(default_factory=time.time)

    @property
    def id(self) -> str:
        return self.key.handle

    def set(self, state: State, **fields) -> None:
        self.state = state
        for k, v in fields.items():
            setattr(self, k, v)
        self.log.poke()

    @property
    def done(self) -> bool:
        return self.state in DONE


class MachineLock:
    """An exclusive lock on a file under the store: held while a job runs, by whichever process runs it (a
    server's queue, or a CLI run), so that two runs never share the cores."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    @classmethod
    def of_store(cls, home: Path) -> "MachineLock":
        return cls(Path(home) / "run.lock")

    def try_acquire(self) -> bool:
        return self._take(blocking=False)

    def acquire(self, on_wait: Callable[[], None] | None = None) -> None:
        """Take the lock, waiting as long as another process holds it (``on_wait`` is told once, first);
        Ctrl-C stops the wait."""
        if not self._take(blocking=False):
            if on_wait is not None:
                on_wait()
            self._take(blocking=True)

    @contextlib.contextmanager
    def held(self, on_wait: Callable[[], None] | None = None):
        self.acquire(on_wait)
        try:
            yield self
        finally:
            self.release()

    def _take(self, blocking: bool) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:  # Ctrl-C while waiting
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class RunQueue:
    """Jobs run one at a time, in the order submitted, on one worker thread."""

    def __init__(self, lock: MachineLock, describe_error: Callable[[BaseException], str] = str):
        self.lock, self.describe_error = lock, describe_error
        self.jobs: dict[JobKey, Job] = {}
        self.waiting: collections.deque[Job] = collections.deque()
        self.current: Job | None = None
        self.wake = threading.Condition()
        self.stopping = False
        self.worker = threading.Thread(target=self._work, name="localpanel-runs", daemon=True)
        self.worker.start()

    def submit(self, job: Job, once: bool = False) -> Job:
        """Queue ``job``. With ``once``, a job of the same key still queued or running is returned instead, decided
        under the queue's lock: two requests to resume one run at the same moment make one job, never two."""
        with self.wake:
            if self.stopping:
                raise RuntimeError("the server is stopping")
            if once and (same := self.jobs.get(job.key)) is not None and not same.done:
                return same
            self.jobs[job.key] = job
            self.waiting.append(job)
            self.wake.notify_all()
        return job

    def get(self, key: JobKey) -> Job | None:
        return self.jobs.get(key)

    def position(self, job: Job) -> int:
        """0: running; n: n jobs go first (the running one included)."""
        with self.wake:
            if job is self.current:
                return 0
            ahead = 1 if self.current is not None else 0
            for i, j in enumerate(self.waiting):
                if j is job:
                    return ahead + i
            return 0

    def busy_with(self, key: JobKey) -> bool:
        """Whether this job is queued or running (a second start of the same run must wait for it)."""
        job = self.jobs.get(key)
        return job is not None and not job.done

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking jobs; the running one is stopped at its next event and stays resumable."""
        with self.wake:
            self.stopping = True
            for job in self.waiting:
                job.set("interrupted", error="the server stopped before this run started")
            self.waiting.clear()
            self.wake.notify_all()
        self.worker.join(timeout)

    # -- the worker -------------------------------------------------------------------------------------

    def _next(self) -> Job | None:
        with self.wake:
            while not self.waiting and not self.stopping:
                self.wake.wait()
            if self.stopping:
                return None
            return self.waiting[0]

    def _work(self) -> None:
        while (job := self._next()) is not None:
            while not self.lock.try_acquire():  # another process on this machine is running one
                job.set("queued", waiting_for="another localpanel run on this machine")
                with self.wake:
                    self.wake.wait(1.0)
                    if self.stopping:
                        return
            with self.wake:
                if self.stopping or not self.waiting or self.waiting[0] is not job:  # stopped while it waited
                    self.lock.release()
                    continue
                self.waiting.popleft()
                self.current = job
            try:
                self._run(job)
            finally:
                self.lock.release()
                with self.wake:
                    self.current = None

    def _run(self, job: Job) -> None:
        job.set("running", waiting_for=None)

        def sink(event: BaseModel) -> None:
            job.log.append(event)
            if self.stopping and getattr(event, "type", None) not in ("interrupted", "failed", "finished"):
                raise Stop("the server stopped")

        try:
            result = job.work(sink)
        except (Stop, KeyboardInterrupt) as exc:
            job.set("interrupted", error=str(exc) or "interrupted")
        except BaseException as exc:  # noqa: BLE001 - a job's failure is its own, never the server's
            job.set("failed", error=self.describe_error(exc))
        else:
            job.set("finished", result=result)
