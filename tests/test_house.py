"""The house: no module of localpanel imports, at any depth and from any function, a module that imports it
back. (Issue 26 found two circles: llama_context <-> llama_models, and registry -> store -> sources -> registry.)"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "localpanel"


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every localpanel module ``name`` imports, module-level or inside a function."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found |= {t for t in [target, *(f"{target}.{a.name}" for a in node.names)] if t in known}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
    return found - {name}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert len(graph) > 30 and "localpanel.api" in graph["localpanel.cli.runs"]  # the walk sees the imports
    assert circles(graph) == []


def test_the_walk_finds_a_circle_when_there_is_one():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


# The stages in the order data flows; a module may import only from its own stage or an earlier one. The package
# itself (``import localpanel``) is the public face: it re-exports from every stage, so it stands after them all.
STAGES = ["ground", "weights", "engine", "panel", "runs", "api", "show", "serve", "eval", "cli", "face"]
GROUND = {"localpanel._moved", "localpanel._version", "localpanel.errors", "localpanel.atomic"}


def stage(name: str) -> str:
    if name in GROUND:
        return "ground"
    if name == "localpanel":
        return "face"
    if name == "localpanel.__main__":
        return "cli"
    return name.split(".")[1]


def against_the_flow(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    rank = {s: i for i, s in enumerate(STAGES)}
    return sorted((a, b) for a, targets in graph.items() for b in targets if rank[stage(b)] > rank[stage(a)])


def test_every_module_is_in_a_stage_and_imports_only_leftwards():
    known = modules()
    assert {stage(n) for n in known} == set(STAGES)  # every stage has a home, and nothing lies outside them
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert against_the_flow(graph) == []


def test_the_flow_check_finds_an_import_against_it():
    graph = {"localpanel.weights.store": {"localpanel.panel.tally"}, "localpanel.panel.tally": {"localpanel.errors"}}
    assert against_the_flow(graph) == [("localpanel.weights.store", "localpanel.panel.tally")]


def test_flat_modules_in_the_package_root_are_only_the_ground_and_the_front_doors():
    flat = {p.stem for p in PACKAGE.glob("*.py")}
    assert flat <= {"__init__", "__main__", "_moved", "_version", "errors", "atomic", "face"}
    assert all((PACKAGE / s / "__init__.py").read_text().startswith('"""') for s in STAGES if (PACKAGE / s).is_dir())


def test_an_old_import_path_is_the_module_at_its_new_path():
    import importlib
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("localpanel.store")
    from localpanel.weights import store

    assert old is store and "localpanel.weights.store" in str(caught[0].message)
