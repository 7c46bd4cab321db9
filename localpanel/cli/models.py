"""Models: list them (and find GGUFs already on this machine), pull and verify weights, pin a new one, prune
the store."""

from __future__ import annotations

import json
from pathlib import Path

import click

from localpanel.cli.common import ByteProgress, CliState, errors_to_sentences, pass_ctx, size_text
from localpanel.weights.discover import scan, size_label
from localpanel.weights.registry import shipped_registry_path, user_registry_path
from localpanel.weights.store import add_model


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--scan", is_flag=True, help="List GGUFs on this machine (Ollama, LM Studio, the HF cache) that models.yaml does not list yet, with the command that adds each.")
@pass_ctx
@errors_to_sentences
def models_command(ctx: CliState, as_json: bool, scan: bool) -> None:
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
        click.echo(f"{r.spec.name:<24} {size_text(r.size):>9}  {sha:<12}  {(r.spec.license or '?')[:14]:<14} {state:<10} {where[:8]:<8} {source}")


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
        click.echo(f"{item.where:<9} {label:<48} {size_text(item.size):>8} {(item.architecture or '?')[:10]:<10} {size_label(item.parameters):>6}")
        click.echo(f"  {item.add}" if not item.problem else f"  cannot be used: {item.problem}")


@click.command()
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


@click.command()
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
    click.echo(f"Added {added.name} to {added.target}: {size_text(entry['size'])}, sha256 {entry['sha256']}, {entry['sources'][0]}")
    click.echo(f"Weights {how}. Use it: localpanel poll \"Question?\" --model {added.name}")


@click.command()
@click.option("--yes", is_flag=True, help="Delete them (without it, only list them: a dry run).")
@click.option("--json", "as_json", is_flag=True, help="Print what is (or would be) removed as JSON.")
@click.option("--keep", "keep", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              metavar="DIR", help="Also keep the weights that the runs and evals under DIR name (repeat); with --yes, "
              "DIR is remembered for later prunes.")
@pass_ctx
@errors_to_sentences
def prune(ctx: CliState, yes: bool, as_json: bool, keep: tuple[Path, ...]) -> None:
    """Remove weights from the store that no models.yaml layer, pin, saved run or eval names (a dry run unless
    --yes).

    
    What it reads: every run and eval under the store, and those made elsewhere with --run-dir or --out-dir
    since localpanel 0.2.0, which lists them in the store's elsewhere.txt. It cannot see a run or eval made
    elsewhere before that, nor one moved since: name its directory with --keep DIR, or its weights may go."""
    from localpanel.eval.api import weights_in_use

    registry = ctx.registry
    stale = ctx.store.unreferenced(registry, weights_in_use(ctx.store, list(keep)))
    total = sum(p.stat().st_size for p in stale)
    layers = list(dict.fromkeys(str(p) for p in [*registry.origins.values(), registry.path] if p))
    if yes:
        for d in keep:
            ctx.store.remember_elsewhere(d)
        for p in stale:
            ctx.store.remove(p)
    if as_json:
        click.echo(json.dumps({"removed" if yes else "would_remove": [str(p) for p in stale], "bytes": total,
                               "registry_layers": layers}, indent=2))
        return
    click.echo(f"Kept: what these models.yaml layers name ({', '.join(layers)}), local pins, every run and eval saved "
               f"under the store, {len(ctx.store.elsewhere_lines())} directories made elsewhere with --run-dir / --out-dir"
               f"{f', and {len(keep)} named with --keep' if keep else ''}. Not seen: runs made elsewhere before "
               "localpanel 0.2.0 or moved since; name them with --keep DIR.")
    for p in stale:
        click.echo(f"{'removed' if yes else 'would remove'} {p} ({size_text(p.stat().st_size) if p.exists() else 'gone'})")
    if not stale:
        click.echo("Nothing to prune: every file in the store is named by models.yaml.")
    elif not yes:
        click.echo(f"{len(stale)} file(s), {size_text(total)}; run `localpanel prune --yes` to remove them.")
