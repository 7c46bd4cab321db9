"""Old import paths, for one release: ``localpanel.store`` and the like were flat modules before the package
was laid out by stages (0.2). Importing one still works, gives the very module at its new path (so patching
either name patches both), and warns once with the new name. Remove after 0.3."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "paths": "weights.paths", "registry": "weights.registry", "sources": "weights.sources", "store": "weights.store",
    "gguf": "weights.gguf", "discover": "weights.discover",
    "runtime": "engine.runtime", "llama": "engine.llama", "llama_context": "engine.llama_context",
    "llama_models": "engine.llama_models", "lockstep": "engine.lockstep", "turns": "engine.turns",
    "decoding": "engine.decoding", "grammar": "engine.grammar", "vocab": "engine.vocab", "draw": "engine.draw",
    "scripted": "engine.scripted", "prompting": "engine.prompting",
    "protocol": "panel.protocol", "ballot": "panel.ballot", "tally": "panel.tally", "moderator": "panel.moderator",
    "coherence": "panel.coherence", "copying": "panel.copying",
    "transcript": "runs.transcript", "events": "runs.events", "jobs": "runs.jobs",
    "render": "show.render", "charts": "show.charts",
    "service": "serve.service", "web": "serve.web", "mcp_server": "serve.mcp_server",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``localpanel.<old>`` and loads it as the module at its new path."""

    def find_spec(self, fullname, path=None, target=None):
        head, _, old = fullname.partition(".")
        if head != "localpanel" or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = f"localpanel.{MOVED[spec.name.split('.', 1)[1]]}"
        warnings.warn(f"{spec.name} moved to {new}; the old name goes in localpanel 0.3.", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module):
        pass  # the module at its new path has run already


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
