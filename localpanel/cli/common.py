"""What every command shares: one sentence per error, the registry and store, progress on stderr, the
machine's run lock, and the options that several commands take, each collapsed into one typed value
(``RuntimeSettings``, ``Seating``, ``VoteOptions``) before a command sees them."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from dataclasses import dataclass

import click
from click.core import ParameterSource

import localpanel.api as api
from localpanel.engine.runtime import RuntimeSettings, busy_warning, physical_cores, threads_warning
from localpanel.errors import LocalpanelError
from localpanel.panel.protocol import COPY_GUARD, DebateSettings
from localpanel.runs.jobs import MachineLock
from localpanel.weights.registry import Panel, Registry, load_registry
from localpanel.weights.store import Store


class Failure(click.ClickException):
    """One sentence on stderr and an exit code: 2 for bad input, 1 for everything else."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def errors_to_sentences(fn):
    """Library errors become one sentence and their exit code; a file that cannot be written says which and
    why (exit 1); Ctrl-C anywhere else exits 130 without a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LocalpanelError as exc:
            if os.environ.get("LOCALPANEL_DEBUG"):
                raise
            raise Failure(str(exc), exc.exit_code) from None
        except OSError as exc:
            if os.environ.get("LOCALPANEL_DEBUG"):
                raise
            where = f" {exc.filename}" if exc.filename else ""
            raise Failure(f"Could not use{where}: {exc.strerror or exc}; check the path and its permissions or free space.") from None
        except KeyboardInterrupt:
            click.echo("\nInterrupted; nothing half-written was left behind.", err=True)
            sys.exit(130)

    return wrapper



class CliState:
    """What every command shares: the registry (loaded on first use) and the store."""

    def __init__(self, models_file: str | None):
        self.models_file = models_file
        self._registry: Registry | None = None
        self.store = Store(progress=ByteProgress(True), on_rehash=lambda name, size: click.echo(
            f"Re-hashing {name} ({size_text(size)}): its verified mark is stale (the file changed since it was checked)…", err=True))

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = load_registry(self.models_file)
        return self._registry


pass_ctx = click.make_pass_decorator(CliState)


class ByteProgress:
    """A one-line progress display for downloads and hashing, on stderr."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, label: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.1 and done != total):
            return
        self.last = now
        size = f"{done / 1e6:.1f}/{total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
        click.echo(f"\r\033[K{label} {size}", nl=False, err=True)

    def end(self) -> None:
        if self.enabled:
            click.echo("\r\033[K", nl=False, err=True)


class TurnProgress:
    """The run's events on stderr: who is voting and how many tokens so far (seats sharing a model vote
    together), and a line per finished ballot."""

    def __init__(self, rounds: int, quiet: bool = False, threads: int | None = None):
        self.rounds, self.quiet = rounds, quiet
        self.live = sys.stderr.isatty() and not quiet
        self.tokens: dict[str, int] = {}
        self.threads = threads or physical_cores()
        self.checked = False

    def __call__(self, event) -> None:
        if self.quiet or event.type not in ("turn_started", "tokens", "ballot") or getattr(event, "earlier", False):
            return
        if not self.checked:  # once, when the first turn starts: bad input never gets this far
            self.checked = True
            for warning in (threads_warning(self.threads), busy_warning(self.threads)):
                if warning:
                    click.echo(f"Warning: {warning}.", err=True)
        where = f"Round {event.round}/{self.rounds} · " if self.rounds > 1 else ""
        if event.type == "turn_started":
            self.tokens[event.participant] = 0
        elif event.type == "tokens":
            self.tokens[event.participant] = event.tokens
        else:
            self.tokens.pop(event.participant, None)
            click.echo(("\r\033[K" if self.live else "") + f"{where}{event.participant}: done ({event.tokens} tokens, {event.seconds:.1f} s)", err=True)
        if self.live and self.tokens:
            busy = " · ".join(f"{name} {n}" for name, n in self.tokens.items())
            click.echo(f"\r\033[K{where}voting… {busy} tokens"[:150], nl=False, err=True)


def size_text(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return "?"


@contextlib.contextmanager
def one_run_at_a_time(store: Store, quiet: bool):
    """Hold the machine's run lock (the one a `serve` or `mcp` queue holds while a run runs): two runs at
    once would share the cores, and llama.cpp's spinning threads make both many times slower."""

    def say() -> None:
        if not quiet:
            click.echo("Waiting for another localpanel run on this machine to finish (two at once would share its "
                       "cores and both run many times slower); Ctrl-C stops waiting.", err=True)

    with MachineLock.of_store(store.home).held(say):
        yield


# What a run is made of: a resume takes all of it from the run's manifest, so giving any of it is a conflict.
RUNTIME_OPTIONS = ("threads", "batch_size", "ctx_size", "gpu_layers", "max_memory", "one_at_a_time")
RUN_SHAPING = ("question", "options", "open_question", "no_merge", "context", "panel", "seat_models", "seed", "temperature", "max_tokens", "rounds", "anonymous",
               "no_early_stop", "copy_guard", "no_debias", "vote_draw", "weights_ref", "ballot_order", "layout", "no_moderator", "run_dir",
               *RUNTIME_OPTIONS)


def refuse_beside_resume(shaping: tuple[str, ...] = RUN_SHAPING) -> None:
    click_ctx = click.get_current_context()
    given = [name for name in shaping if name in click_ctx.params
             and click_ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)]
    if given:
        flag = ("a question" if given[0] in ("question", "source")
                else "--" + given[0].replace("open_question", "open").replace("_", "-").replace("seat-models", "model").replace("ballot-order", "ballot"))
        raise Failure(f"--resume continues a run exactly as it was started, so it takes no {flag}; "
                      "drop it, or start a new run without --resume.", 2)


def collapse(fn, names: tuple[str, ...], into: str, make):
    """Click passes each option as its own keyword; the command gets them as one typed value instead. Errors
    in building it (a bad --max-memory) are one sentence, as in the command itself."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        kwargs[into] = make(*(kwargs.pop(n) for n in names))
        return fn(*args, **kwargs)

    return errors_to_sentences(wrapper)


def _apply(fn, options):
    for option in reversed(options):
        fn = option(fn)
    return fn


def runtime_options(fn):
    """--threads ... --one-at-a-time, given to the command as ``runtime: RuntimeSettings``."""
    def make(threads, batch_size, ctx_size, gpu_layers, max_memory, one_at_a_time) -> RuntimeSettings:
        return RuntimeSettings(threads=threads, batch_size=batch_size, context_length=ctx_size, gpu_layers=gpu_layers,
                               max_memory=api.parse_size(max_memory) if max_memory else None,
                               batch_sequences=not one_at_a_time)

    return _apply(collapse(fn, RUNTIME_OPTIONS, "runtime", make), [
        click.option("--threads", type=click.IntRange(1), help=f"CPU threads (default: physical cores, {physical_cores()} here)."),
        click.option("--batch-size", type=click.IntRange(8, 8192), default=512, show_default=True, help="Prompt tokens evaluated per batch."),
        click.option("--ctx-size", type=click.IntRange(512), default=4096, show_default=True, help="Largest context per participant; each is sized to what its conversation can reach, within the model's window."),
        click.option("--gpu-layers", type=click.IntRange(-1), default=0, show_default=True, help="Layers to offload to the GPU (-1: all); needs a CUDA or Metal build."),
        click.option("--max-memory", metavar="SIZE", help="Bound on loaded model weights, e.g. 6GiB; least recently used models are unloaded."),
        click.option("--one-at-a-time", is_flag=True, help="Decode each seat on its own instead of seats that share a model together in one batch (slower; results differ in the last bits, so a run replays with its own choice)."),
    ])


@dataclass(frozen=True)
class Seating:
    """Who sits: a panel of models.yaml, or models seated one by one (--model, repeatable)."""

    panel: str | None
    models: tuple[str, ...]

    def check(self) -> None:
        if self.panel and self.models:
            raise Failure("Give either --panel or --model, not both.", 2)

    def panel_of(self, registry: Registry) -> Panel:
        self.check()
        return registry.models_panel(list(self.models)) if self.models else registry.panel(self.panel)

    def seated(self, registry: Registry) -> tuple[Registry, str | None]:
        """The registry a run reads and the panel it names: --model seats become a panel of their own."""
        self.check()
        if not self.models:
            return registry, self.panel
        chosen = registry.models_panel(list(self.models))
        return registry.with_panel(chosen), chosen.name


def seat_options(fn):
    """--panel and --model, given to the command as ``seating: Seating``."""
    return _apply(collapse(fn, ("panel", "seat_models"), "seating", lambda p, m: Seating(p, tuple(m))), [
        click.option("--panel", help="Panel from models.yaml (default: its default panel)."),
        click.option("-m", "--model", "seat_models", multiple=True, metavar="NAME", help="Seat this model from models.yaml instead of a panel (repeat for more seats; in a poll or debate the first also moderates)."),
    ])


DEFAULT_BALLOT = "reason-first" if DebateSettings().reason_first else "vote-first"


@dataclass(frozen=True)
class VoteOptions:
    """How each vote is asked and counted, shared by poll, debate and eval: the seed, the sampling, the ballot's
    order, debiasing, views or draws, and seat weights."""

    seed: int
    temperature: float | None
    max_tokens: int
    debias: bool
    vote_draw: bool
    reason_first: bool
    weights_ref: str | None
    layout: str = "conversation"


def vote_options(*, seed: int, max_tokens: int, ballot: str, seed_help: str, debias_help: str, draw_help: str,
                 weights_help: str, ballot_help: str):
    """--seed ... --ballot, given to the command as ``vote: VoteOptions``; the defaults are the command's own
    (an eval asks for longer, reason-first ballots)."""
    def decorate(fn):
        def make(seed, temperature, max_tokens, no_debias, vote_draw, weights_ref, ballot_order, layout) -> VoteOptions:
            return VoteOptions(seed=seed, temperature=temperature, max_tokens=max_tokens, debias=not no_debias,
                               vote_draw=vote_draw, reason_first=ballot_order == "reason-first", weights_ref=weights_ref,
                               layout=layout)

        names = ("seed", "temperature", "max_tokens", "no_debias", "vote_draw", "weights_ref", "ballot_order", "layout")
        return _apply(collapse(fn, names, "vote", make), [
            click.option("--seed", type=click.IntRange(0), default=seed, show_default=True, help=seed_help),
            click.option("--temperature", type=click.FloatRange(0, 2), help="Override every participant's temperature."),
            click.option("--max-tokens", type=click.IntRange(32, 4096), default=max_tokens, show_default=True, help="Most tokens one ballot may take; a ballot cut off is recorded as failed."),
            click.option("--no-debias", is_flag=True, help=debias_help),
            click.option("--vote-draw", is_flag=True, help=draw_help),
            click.option("--weights", "weights_ref", metavar="FILE|PANEL", help=weights_help),
            click.option("--ballot", "ballot_order", type=click.Choice(["vote-first", "reason-first"]), default=ballot, show_default=True, help=ballot_help),
            click.option("--layout", type=click.Choice(["conversation", "shared"]), default="conversation", show_default=True,
                         help="How later rounds are asked. conversation: each seat carries on its own conversation and "
                              "reads its peers' ballots itself; shared: each round is one prompt whose opening (the "
                              "question, then every ballot of the last round) all seats of a model read alike, "
                              "evaluated once per model, then each seat's name, persona, last vote and options "
                              "(fewer prompt tokens; other prompts, so other ballots)."),
        ])

    return decorate


def copy_guard_option(fn):
    """--copy-guard WORDS (0: off), given to the command as ``copy_guard: int | None``."""
    def make(copy_guard: int) -> int | None:
        if copy_guard == 1:
            raise Failure("--copy-guard takes 0 (off) or a run length of 2 to 64 words.", 2)
        return copy_guard or None

    return click.option(
        "--copy-guard", type=click.IntRange(0, 64), default=COPY_GUARD, show_default=True, metavar="WORDS",
        help="From round 2 on, a rationale may not copy a run of this many words (case and punctuation aside) from "
             "the earlier rationales (the peers' and its own) or the prompt's instructions, and the prompt asks for "
             "the seat's own words; shorter quotes, and quotes of the question and options, stay possible. 0 turns "
             "it off.")(collapse(fn, ("copy_guard",), "copy_guard", make))
