"""The localpanel command line: a thin layer over ``localpanel.api``, one module per command group.

    common    what every command shares: errors as one sentence, progress, the run lock, typed shared options
    runs      poll, debate, show, replay, runs, runs rm
    models    models, pull, add, prune
    evaluate  eval (run, show, compare), calibrate
    servers   mcp, serve
"""

from __future__ import annotations

import click

from localpanel._version import __version__
from localpanel.cli.common import CliState
from localpanel.cli.evaluate import calibrate, eval_group
from localpanel.cli.models import add, models_command, prune, pull
from localpanel.cli.runs import debate, poll, replay, runs_group, show
from localpanel.cli.servers import mcp_command, serve


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


# Commands are named *_command or *_group where a plain name would hide the module of the same name.
for command in (models_command, pull, add, prune, poll, debate, show, replay, runs_group, mcp_command, serve, eval_group,
                calibrate):
    cli.add_command(command)


def main() -> None:  # pragma: no cover
    cli()
