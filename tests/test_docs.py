"""The front door: the README stays an index, its links and the docs' links lead somewhere, docs/cli.md is every
command's --help as it is now, and the quick start runs as written (on the tiny panel, as the text says)."""

import importlib.util
import re
import shlex
import subprocess
import sys

import pytest

from .conftest import REPO

DOCS = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"(?m)^#{1,6} (.+)$", text)}


def cli_docs():
    spec = importlib.util.spec_from_file_location("cli_docs", REPO / "scripts" / "cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_relative_link_and_anchor_in_the_readme_and_docs_exists():
    broken = []
    for doc in DOCS:
        text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
        for m in LINK.finditer(text):
            target = m.group(1) or m.group(2)
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked offline
            path, _, anchor = target.partition("#")
            where = (doc.parent / path).resolve() if path else doc
            if not where.exists():
                broken.append(f"{doc.name}: {target} (no such file)")
            elif anchor and where.suffix == ".md" and anchor not in anchors(where):
                broken.append(f"{doc.name}: {target} (no such heading)")
    assert not broken, broken


def test_the_readme_is_an_index():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 250, len(lines)
    first = "\n".join(lines[:100])
    assert "localpanel debate " in first and "Turning points" in first  # a debate and its card early on
    assert not re.search(r"/(root|home|Users|work)/", text)  # no path of one machine
    assert not [line for line in lines if line.startswith("|") and "±" in line]  # no measurement table


def test_docs_cli_md_is_every_commands_help_as_it_is_now():
    assert (REPO / "docs" / "cli.md").read_text(encoding="utf-8") == cli_docs().render(), \
        "docs/cli.md is stale: run .venv/bin/python scripts/cli_docs.py"


def quick_start() -> list[list[str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [shlex.split(line.split("#")[0]) for line in block.strip().splitlines() if line.startswith("localpanel ")]


def test_the_quick_start_block_is_what_the_test_below_runs():
    commands = quick_start()
    assert [c[1] for c in commands] == ["poll", "debate", "poll", "show"]


@pytest.mark.real
def test_the_quick_start_runs_as_written_on_the_tiny_panel(store_with_weights):
    """Each command as the README writes it, with --panel tiny added as its text says, in a fresh store."""
    for command in quick_start():
        args = command[1:] + (["--panel", "tiny", "-q"] if command[1] in ("poll", "debate") else [])
        done = subprocess.run([sys.executable, "-m", "localpanel", *args], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (args, done.stderr)
        if command[1] == "debate":
            assert "Turning points" in done.stdout and "Vote matrix" in done.stdout
        if "--open" in command:
            assert "Proposals" in done.stdout
    assert "<!doctype html>" in (store_with_weights.home.parent / "card.html").read_text(encoding="utf-8").lower()
