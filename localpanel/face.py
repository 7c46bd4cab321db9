"""The public face: what ``import localpanel`` gives a caller, each a thin call into the stage that does the work.
A store and a registry are the user's own unless given (``home``: another store; ``models_file``: another
models.yaml); everything else is typed (``DebateSettings``, ``EvalSettings``, ``RuntimeSettings``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import localpanel.api as api
from localpanel.api.request import RunRequest
from localpanel.engine.runtime import RuntimeSettings
from localpanel.errors import InputError
from localpanel.eval import api as eval_api
from localpanel.eval.report import Report
from localpanel.eval.runner import EvalSettings
from localpanel.eval.weights import Weights
from localpanel.panel.protocol import DebateSettings
from localpanel.runs.events import EventSink
from localpanel.runs.transcript import Transcript
from localpanel.weights.registry import Panel, Registry, load_registry
from localpanel.weights.store import Store


def _where(home: Path | str | None, models_file: Path | str | None) -> tuple[Store, Registry]:
    return Store(Path(home) if home else None), load_registry(models_file)


def poll(question: str, options: Sequence[str] = (), *, panel: str | None = None, models: Sequence[str] = (),
         integer: bool = False, open: bool = False, context: Sequence[Path | str] = (), seed: int | None = None,
         settings: DebateSettings | None = None, moderator: bool = True,
         runtime: RuntimeSettings | None = None, run_dir: Path | str | None = None, home: Path | str | None = None,
         models_file: Path | str | None = None, on_event: EventSink | None = None) -> Transcript:
    """Ask every seat of a panel once and tally their grammar-forced ballots; the run is saved like the CLI's.

    ``options``: the answers to choose among (none: Yes and No); ``integer=True`` asks for a whole number instead;
    ``open=True`` has each seat propose a short answer first, merged into the candidates the panel votes among.
    ``context``: text files every seat reads before the question (hashed into the manifest).
    ``panel``: a panel of models.yaml (default: its default panel), or ``models``: one seat per model name.
    ``seed`` (default 7) and ``settings`` set the vote; the same seed and weights give the same ballots.

        >>> t = localpanel.poll("Tabs or spaces?", ["Tabs", "Spaces"], panel="tiny")
        >>> t.result.line
    """
    return _run(question, options, 1, panel, models, integer, open, context, seed, settings, moderator, runtime,
                run_dir, home, models_file, on_event)


def debate(question: str, options: Sequence[str] = (), *, rounds: int = 3, panel: str | None = None,
           models: Sequence[str] = (), integer: bool = False, open: bool = False,
           context: Sequence[Path | str] = (), seed: int | None = None,
           settings: DebateSettings | None = None, moderator: bool = True, runtime: RuntimeSettings | None = None,
           run_dir: Path | str | None = None, home: Path | str | None = None, models_file: Path | str | None = None,
           on_event: EventSink | None = None) -> Transcript:
    """Rounds of persuasion: each round every seat reads the others' ballots and may change its vote. Stops at
    consensus, at a round that changes no vote (unless ``settings.early_stop`` is off), or after ``rounds``.
    The other arguments are ``poll``'s.

        >>> t = localpanel.debate("Tabs or spaces?", ["Tabs", "Spaces"], panel="tiny", rounds=2)
        >>> [p.participant for p in t.turning_points]
    """
    return _run(question, options, rounds, panel, models, integer, open, context, seed, settings, moderator, runtime,
                run_dir, home, models_file, on_event)


def _run(question, options, rounds, panel, models, integer, open, context, seed, settings, moderator, runtime,
         run_dir, home, models_file, on_event) -> Transcript:
    store, registry = _where(home, models_file)
    fields = {**(settings or DebateSettings()).model_dump(), "rounds": rounds, **({"seed": seed} if seed is not None else {})}
    if integer and open:
        raise InputError("A question is either open or has an integer answer; set one of open and integer.")
    kind = "integer" if integer else "open" if open else "options"
    request = RunRequest(question=question, kind=kind, options=list(options),
                         panel=panel, models=list(models), settings=DebateSettings(**fields),
                         context=[Path(c) for c in context],
                         moderator=moderator, runtime=runtime or RuntimeSettings(),
                         run_dir=Path(run_dir) if run_dir else None)
    return api.run(request, registry=registry, store=store, on_event=on_event)


def replay(run: str | Path, *, home: Path | str | None = None, on_event: EventSink | None = None) -> api.ReplayReport:
    """Run every turn of a saved run again from its pinned weights and seeds; ``identical`` says whether every
    ballot came out the same, ``divergence`` where the first one did not. ``run``: a directory, an id, or 'last'."""
    return api.replay(run, store=_where(home, None)[0], on_event=on_event)


def resume(run: str | Path, *, home: Path | str | None = None, on_event: EventSink | None = None) -> Transcript:
    """Finish an interrupted run with the settings it started with (a finished one is only read)."""
    return api.resume(run, store=_where(home, None)[0], on_event=on_event)


def load(run: str | Path, *, home: Path | str | None = None) -> Transcript:
    """A saved run's transcript: every ballot, probability and figure the card shows."""
    return api.load_run(run, _where(home, None)[0])


def evaluate(source: str, *, panel: str | None = None, models: Sequence[str] = (), settings: EvalSettings | None = None,
             runtime: RuntimeSettings | None = None, out_dir: Path | str | None = None, home: Path | str | None = None,
             models_file: Path | str | None = None) -> Report:
    """Score a panel on a question set (a JSONL file, ``arithmetic:N``, ``gsm8k:N``, ``arc-challenge:A-B``):
    single model, vote, weighted vote and debate, each with its stderr and against the best seat."""
    store, registry = _where(home, models_file)
    chosen = _panel(registry, panel, models)
    return eval_api.evaluate(source, panel=chosen, registry=registry, store=store, settings=settings, runtime=runtime,
                             out_dir=Path(out_dir) if out_dir else None)


def calibrate(source: str, *, panel: str | None = None, models: Sequence[str] = (), seed: int = 0,
              reason_first: bool = True, out: Path | str | None = None, home: Path | str | None = None,
              models_file: Path | str | None = None) -> Weights:
    """Weigh each model of a panel by how often it is right on held-out questions (or an eval directory's finished
    round-1 ballots), and save the weights where ``evaluate(..., settings=EvalSettings(weights=...))`` and the
    CLI's ``--weights PANEL`` find them."""
    store, registry = _where(home, models_file)
    chosen = _panel(registry, panel, models) if panel or models or not (Path(source) / "eval.json").is_file() else None
    weights, _ = eval_api.calibrate(source, registry=registry, store=store, panel=chosen, seed=seed,
                                    reason_first=reason_first, out=Path(out) if out else None)
    return weights


def _panel(registry: Registry, panel: str | None, models: Sequence[str]) -> Panel:
    if panel and models:
        raise InputError("Give either a panel or models, not both.")
    return registry.models_panel(list(models)) if models else registry.panel(panel)
