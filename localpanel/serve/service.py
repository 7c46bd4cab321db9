"""What the MCP server and the web page hold: a ``RunRunner`` that starts, resumes and replays runs through the
library's own calls, one at a time, and a ``RunReader`` that reads them, over one store and one queue."""

from __future__ import annotations

from typing import Callable

from localpanel.engine.runtime import Backend, RuntimeSettings
from localpanel.serve.reader import RunReader
from localpanel.serve.runner import RunRunner, sentence  # noqa: F401  (sentence: the front ends' error wording)
from localpanel.weights.store import Store


class Service:
    """The runner and the reader the front ends call, as one object."""

    def __init__(self, store: Store | None = None, runtime: RuntimeSettings | None = None,
                 registry_file: str | None = None, make_backend: Callable[[RuntimeSettings], Backend] | None = None):
        self.store = store or Store()
        self.runner = RunRunner(self.store, runtime, registry_file, make_backend)
        self.reader = RunReader(self.store, self.runner.queue, self.runner.registry)
        self.queue = self.runner.queue
        # What the front ends call: work goes to the runner, reading to the reader.
        self.start, self.resume, self.replay = self.runner.start, self.runner.resume, self.runner.replay
        self.find, self.job, self.snapshot, self.events = (self.reader.find, self.reader.job, self.reader.snapshot,
                                                           self.reader.events)
        self.card, self.live_charts, self.runs, self.catalog = (self.reader.card, self.reader.live_charts,
                                                                self.reader.runs, self.reader.catalog)

    def close(self) -> None:
        self.runner.close()
