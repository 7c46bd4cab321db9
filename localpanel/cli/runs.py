"""Runs: poll and debate (and their --resume), show, replay, and the saved runs (runs, runs rm)."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import click

import localpanel.api as api
from localpanel.atomic import atomic_write_text
from localpanel.cli.common import (
    DEFAULT_BALLOT,
    RUNTIME_OPTIONS,
    CliState,
    Failure,
    Seating,
    TurnProgress,
    VoteOptions,
    collapse,
    copy_guard_option,
    errors_to_sentences,
    one_run_at_a_time,
    pass_ctx,
    refuse_beside_resume,
    runtime_options,
    seat_options,
    vote_options,
)
from localpanel.engine.runtime import RuntimeSettings
from localpanel.panel.protocol import MAX_ROUNDS, DebateSettings
from localpanel.runs.rundir import RunDir, find_run
from localpanel.show.render import FORMATS, render


def run_options(fn):
    """What poll and debate share, given to them as ``opts: RunOptions``."""
    def make(options, open_question, no_merge, context, seating, vote, no_moderator, run_dir, as_json, fmt, out, quiet,
             runtime) -> "RunOptions":
        return RunOptions(options=tuple(options), open=open_question, merge=not no_merge, context=tuple(context),
                          seating=seating, vote=vote,
                          with_moderator=not no_moderator, run_dir=run_dir, runtime=runtime, as_json=as_json, fmt=fmt,
                          out=out, quiet=quiet)

    names = ("options", "open_question", "no_merge", "context", "seating", "vote", "no_moderator", "run_dir", "as_json", "fmt", "out",
             "quiet", "runtime")
    fn = collapse(fn, names, "opts", make)
    fn = runtime_options(fn)
    for option in reversed([
        click.option("--open", "open_question", is_flag=True, help="An open question: each seat first proposes a short "
                     "answer; equal and near-equal ones are merged into candidates, and the panel votes among them "
                     "(no -o/--option)."),
        click.option("--no-merge", is_flag=True, help="With --open: keep every proposal its own candidate (only the "
                     "same text is merged)."),
        click.option("--context", "context", multiple=True, metavar="FILE", type=click.Path(path_type=Path, dir_okay=False),
                     help="A text document every seat reads before the question (repeat for more). Its sha256 and "
                     "size go into the manifest; what does not fit a seat's context is cut, and the card says how "
                     "much was read; replay refuses a changed or missing file."),
        click.option("--no-moderator", is_flag=True, help="Skip the moderator's summary and strongest arguments."),
        click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), help="Where to save the run (default: under the store's runs/)."),
        click.option("--json", "as_json", is_flag=True, help="Print the whole transcript as JSON on stdout."),
        click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True, help="How to print the result."),
        click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the result in --format to FILE."),
        click.option("-q", "--quiet", is_flag=True, help="No progress on stderr."),
    ]):
        fn = option(fn)
    fn = vote_options(
        seed=7, max_tokens=512, ballot=DEFAULT_BALLOT, seed_help="Run seed; every turn's seed derives from it.",
        debias_help="Score each vote in the order its seat was shown only, instead of under rotations of the options averaged (faster; keeps the models' preference for a position).",
        draw_help="Draw each vote from its seat's probabilities at the seat's temperature, instead of taking the option the seat finds most probable (the default: a vote is the seat's view). The card then says so.",
        weights_help="Also count the votes with seat weights from `localpanel calibrate` (a file, or a panel calibrated under this store); the card shows both counts.",
        ballot_help="vote-first: the vote, then the rationale; reason-first: the rationale (the model's working), then the vote it leads to. Cards show the vote first either way.",
    )(fn)
    fn = seat_options(fn)
    return click.option("-o", "--option", "options", multiple=True, metavar="TEXT", help="An answer to vote for (repeat; default: Yes and No).")(fn)


@dataclass(frozen=True)
class RunOptions:
    """What poll and debate share, typed: the options voted on, the seats, the vote, the runtime, and how the
    result is shown."""

    options: tuple[str, ...]
    open: bool
    merge: bool
    context: tuple[Path, ...]
    seating: Seating
    vote: VoteOptions
    with_moderator: bool
    run_dir: Path | None
    runtime: RuntimeSettings
    as_json: bool
    fmt: str
    out: Path | None
    quiet: bool

    def settings(self, **fields) -> DebateSettings:
        v = self.vote
        return DebateSettings(reason_first=v.reason_first, debias=v.debias, vote_draw=v.vote_draw, seed=v.seed, layout=v.layout,
                              temperature=v.temperature, max_tokens=v.max_tokens, merge=self.merge, **fields)


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



def _run(ctx: CliState, question: str, settings: DebateSettings, opts: RunOptions) -> None:
    if opts.vote.weights_ref:
        from localpanel.eval.weights import load as load_weights

        w = load_weights(opts.vote.weights_ref, ctx.store.home)
        settings = settings.model_copy(update={"seat_weights": {m: x.weight for m, x in w.models.items()},
                                               "weights_from": w.source})
    opts.seating.check()
    if not opts.merge and not opts.open:
        raise Failure("--no-merge keeps an open question's proposals apart; it needs --open.", 2)
    request = api.RunRequest(question=question, kind="open" if opts.open else "options", options=list(opts.options),
                             panel=opts.seating.panel, context=list(opts.context),
                             models=list(opts.seating.models), settings=settings, moderator=opts.with_moderator,
                             runtime=opts.runtime, run_dir=opts.run_dir)
    started: list[Path] = []
    # Every input is checked before waiting for another run: a typo is said at once, not after an eval ends.
    api.check_run(request, registry=ctx.registry, store=ctx.store)
    try:
        with one_run_at_a_time(ctx.store, opts.quiet):
            transcript = api.run(request, registry=ctx.registry, store=ctx.store, on_start=started.append,
                                 on_event=TurnProgress(settings.rounds, opts.quiet, opts.runtime.threads))
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



def _resume(ctx: CliState, ref: Path, opts: RunOptions) -> None:
    refuse_beside_resume()
    run = find_run(ref, ctx.store.runs_dir)
    was_finished = run.finished
    manifest = run.manifest()
    progress = TurnProgress(manifest.settings.rounds, opts.quiet, manifest.runtime.threads)
    try:
        with one_run_at_a_time(ctx.store, opts.quiet):
            transcript = api.resume(run.path, store=ctx.store, on_event=progress)
    except KeyboardInterrupt:
        _interrupted(run.path, True)
    if was_finished:
        click.echo(f"{run.path} had already finished; showing it.", err=True)
    _emit(transcript, opts.fmt, opts.out, opts.as_json)



@click.command()
@click.argument("question", required=False)
@run_options
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path), help="Finish an interrupted poll from its run directory.")
@pass_ctx
@errors_to_sentences
def poll(ctx: CliState, question: str | None, resume_dir: Path | None, opts: RunOptions) -> None:
    """Ask every participant once, independently; tally the grammar-forced ballots.

    \b
    Examples:
      localpanel poll "Is it hypocrisy that AI labs complain about distillation?" -o Yes -o No
      localpanel poll "Which database for a 10 GB analytics job?" -o DuckDB -o PostgreSQL -o SQLite --seed 7
      localpanel poll "..." --format markdown --out result.md
    """
    if resume_dir:
        return _resume(ctx, resume_dir, opts)
    _run(ctx, question or "", opts.settings(rounds=1), opts)


@click.command()
@click.argument("question", required=False)
@click.option("--rounds", type=click.IntRange(1, MAX_ROUNDS), default=3, show_default=True, help="Most rounds to run.")
@click.option("--anonymous", is_flag=True, help="Show other participants as Panelist A, B, ... instead of by name.")
@click.option("--no-early-stop", is_flag=True, help="Run every round even after consensus or a round with no change.")
@copy_guard_option
@run_options
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path), help="Finish an interrupted debate from its run directory.")
@pass_ctx
@errors_to_sentences
def debate(ctx: CliState, question: str | None, rounds: int, anonymous: bool, no_early_stop: bool, copy_guard: int | None,
           resume_dir: Path | None, opts: RunOptions) -> None:
    """Rounds of persuasion: each round, participants read the others' ballots and may change their vote.

    Stops at consensus (all agree), when a round changes no vote, or after --rounds. Every finished turn
    is journaled first: after Ctrl-C, kill -9 or a power cut, --resume continues where it stopped.

    \b
    Examples:
      localpanel debate "Is distilling a closed model's outputs ethical?" -o Yes -o No --rounds 3
      localpanel debate "..." --run-dir runs/ethics --seed 5 --json
      localpanel debate --resume runs/ethics
    """
    if resume_dir:
        return _resume(ctx, resume_dir, opts)
    settings = opts.settings(rounds=rounds, anonymous=anonymous, early_stop=not no_early_stop, copy_guard=copy_guard)
    _run(ctx, question or "", settings, opts)


@click.command()
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


@click.command()
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
    with one_run_at_a_time(ctx.store, quiet):
        report = api.replay(run, store=ctx.store, on_event=TurnProgress(manifest.settings.rounds, quiet))
    if as_json:
        click.echo(json.dumps(report.summary(), indent=2))
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


@click.group("runs", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("--limit", type=click.IntRange(1), help="Only the newest N runs.")
@click.pass_context
@errors_to_sentences
def runs_group(click_ctx: click.Context, as_json: bool, limit: int | None) -> None:
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


@runs_group.command("rm")
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

