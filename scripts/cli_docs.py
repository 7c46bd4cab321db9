"""Write docs/cli.md from every command's --help (tests/test_docs.py fails when it is stale).

    .venv/bin/python scripts/cli_docs.py          # rewrite docs/cli.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

WIDTH = 100


def render() -> str:
    from localpanel.cli import cli

    out = ["# Command reference", "",
           "Generated from each command's `--help` by `scripts/cli_docs.py`; `localpanel COMMAND --help` says the same.", ""]

    def walk(cmd: click.Command, path: list[str], parent: click.Context | None) -> None:
        # make_context applies the command's context_settings (e.g. -h beside --help), as running it would.
        ctx = cmd.make_context(path[-1], [], parent=parent, resilient_parsing=True, terminal_width=WIDTH,
                               max_content_width=WIDTH)
        title = " ".join(path)
        out.extend([f"## {title}", "", "```", cmd.get_help(ctx).rstrip(), "```", ""])
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                if sub is not None and not sub.hidden:
                    walk(sub, [*path, name], ctx)

    walk(cli, ["localpanel"], None)
    return "\n".join(out)


if __name__ == "__main__":
    target = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}", file=sys.stderr)
