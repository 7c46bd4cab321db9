"""localpanel: polls and debates between open-weight LLMs, entirely on your own machine.

    import localpanel
    t = localpanel.debate("Tabs or spaces?", ["Tabs", "Spaces"], panel="tiny", rounds=2)
    print(t.result.line)

Everything a caller needs is a name of this package, listed in ``__all__``: the calls (``poll``, ``debate``,
``replay``, ``resume``, ``load``, ``evaluate``, ``calibrate``), the types they take and give, and the errors
they raise. The stage folders below are the house's inside and may move:

    weights/  models.yaml, sources, the sha256-pinned store          (what a model is, where its bytes are)
    engine/   llama.cpp, chat templates, grammar-forced decoding     (a conversation in, a ballot out)
    panel/    protocol, rounds, tally, moderator, coherence, copying (seats, rounds, what they add up to)
    runs/     manifest, journal, transcript, events, queue           (what a run leaves and streams)
    api/      the run request, start, resume, replay, ...            (the library's calls)
    show/     cards and charts    serve/  MCP and the live page     eval/  benchmarks, reports, weights
    cli/      the command line, by command group                     face.py  what this package exports

errors.py, atomic.py and _version.py sit under all of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from localpanel import _moved
from localpanel._version import __version__

# Each public name and the module it lives in: imported on first use, so that `import localpanel` stays light
# (llama.cpp, numpy and pydantic load only when a call needs them).
_PUBLIC = {
    "poll": "localpanel.face", "debate": "localpanel.face", "replay": "localpanel.face", "resume": "localpanel.face",
    "load": "localpanel.face", "evaluate": "localpanel.face", "calibrate": "localpanel.face",
    "RunRequest": "localpanel.api.request", "ReplayReport": "localpanel.api",
    "DebateSettings": "localpanel.panel.protocol", "RuntimeSettings": "localpanel.engine.runtime",
    "Transcript": "localpanel.runs.transcript", "EvalSettings": "localpanel.eval.runner",
    "Report": "localpanel.eval.report", "Weights": "localpanel.eval.weights",
    "Store": "localpanel.weights.store", "Registry": "localpanel.weights.registry",
    "load_registry": "localpanel.weights.registry",
    "LocalpanelError": "localpanel.errors", "InputError": "localpanel.errors", "RunError": "localpanel.errors",
    "RunNotFound": "localpanel.errors", "NotPulledError": "localpanel.errors",
}
__all__ = ["__version__", *_PUBLIC]

if TYPE_CHECKING:  # what a type checker and an editor see; at run time each name is imported on first use
    from localpanel.api import ReplayReport
    from localpanel.api.request import RunRequest
    from localpanel.engine.runtime import RuntimeSettings
    from localpanel.errors import InputError, LocalpanelError, NotPulledError, RunError, RunNotFound
    from localpanel.eval.report import Report
    from localpanel.eval.runner import EvalSettings
    from localpanel.eval.weights import Weights
    from localpanel.face import calibrate, debate, evaluate, load, poll, replay, resume
    from localpanel.panel.protocol import DebateSettings
    from localpanel.runs.transcript import Transcript
    from localpanel.weights.registry import Registry, load_registry
    from localpanel.weights.store import Store


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'localpanel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


_moved.install()
