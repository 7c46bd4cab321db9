"""Weights the user already has: a local GGUF, Ollama's blobs, LM Studio's tree and the Hugging Face cache."""

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from localpanel.cli import cli
from localpanel.weights.discover import scan_hf_cache, scan_lmstudio, scan_ollama
from localpanel.weights.registry import load_registry
from localpanel.weights.store import Store

from .ggufdata import sha, tiny_gguf

GOOD = tiny_gguf("good")


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def ollama_tree(root, name, tag, data, digest=None):
    """Ollama's layout: a manifest per tag naming the model blob, blobs named by their sha256."""
    digest = digest or sha(data)
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    blob = root / "blobs" / f"sha256-{digest}"
    blob.write_bytes(data)
    config = b'{"model_format":"gguf"}'
    (root / "blobs" / f"sha256-{sha(config)}").write_bytes(config)
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / name / tag
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": f"sha256:{sha(config)}", "size": len(config)},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": len(data)},
            {"mediaType": "application/vnd.ollama.image.license", "digest": "sha256:" + "0" * 64, "size": 10},
        ],
    }))
    return blob


def user_file():
    """Where `add` pins what a user adds: their own models.yaml under LOCALPANEL_HOME (not ./models.yaml)."""
    return Path(os.environ["LOCALPANEL_HOME"]) / "models.yaml"


def models_yaml(tmp_path):
    assert not (tmp_path / "models.yaml").exists()
    return yaml.safe_load(user_file().read_text())["models"]


def test_a_local_gguf_is_pinned_once_and_hard_linked(tmp_path):
    local = tmp_path / "Downloads" / "Tiny-Model-Q4_K_M.gguf"
    local.parent.mkdir()
    local.write_bytes(GOOD)
    first = invoke("add", str(local), "--name", "tiny-local")
    assert first.exit_code == 0, first.output
    assert "hard-linked into the store, no copy" in first.output
    entry = models_yaml(tmp_path)["tiny-local"]
    assert entry == {"sha256": sha(GOOD), "size": len(GOOD), "description": "good", "sources": [local.resolve().as_uri()]}
    assert os.stat(Store().blob(sha(GOOD))).st_ino == os.stat(local).st_ino
    text_before = user_file().read_text()
    second = invoke("add", str(local))  # another default name, same bytes: not pinned twice
    assert second.exit_code == 0 and "Already in models.yaml as tiny-local" in second.output
    assert user_file().read_text() == text_before
    assert "# Models you added with `localpanel add`" in text_before  # comments kept


@pytest.mark.parametrize("data, message", [
    (b"PK\x03\x04 not a model at all", "is not a GGUF file"),
    (GOOD[: len(GOOD) // 2], "is truncated"),
])
def test_a_file_that_is_not_a_whole_gguf_is_refused_and_nothing_is_written(tmp_path, data, message):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(data)
    result = invoke("add", str(bad))
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {bad} {message}") and result.output.count("\n") == 1
    assert not user_file().exists() and not Store().models_dir.exists()


def test_missing_file_is_one_sentence(tmp_path):
    result = invoke("add", str(tmp_path / "nope.gguf"))
    assert result.exit_code == 2 and "No file" in result.output and "ollama://NAME:TAG" in result.output


def test_ollama_model_is_added_from_its_blob_with_the_pin_it_is_named_by(tmp_path, monkeypatch):
    root = tmp_path / "ollama"
    blob = ollama_tree(root, "tinyllm", "1b", GOOD)
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    found = scan_ollama()
    assert [(f.label, f.sha256, f.add, f.architecture, f.parameters) for f in found] == [
        ("tinyllm:1b", sha(GOOD), "localpanel add ollama://tinyllm:1b", "llama", 1024)]
    result = invoke("add", "ollama://tinyllm:1b")
    assert result.exit_code == 0, result.output
    entry = models_yaml(tmp_path)["tinyllm-1b"]
    assert entry["sha256"] == sha(GOOD) and entry["sources"] == [blob.resolve().as_uri()]
    assert entry["description"] == "tinyllm:1b (from Ollama)"
    assert load_registry().model("tinyllm-1b").sha256 == sha(GOOD)
    missing = invoke("add", "ollama://tinyllm:70b")
    assert missing.exit_code == 2 and "Ollama has no model 'tinyllm:70b'" in missing.output


def test_ollama_blob_whose_bytes_do_not_match_its_name_is_refused(tmp_path, monkeypatch):
    root = tmp_path / "ollama"
    ollama_tree(root, "liar", "latest", GOOD, digest="ab" * 32)
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    result = invoke("add", "ollama://liar")
    assert result.exit_code == 1
    assert "does not match the sha256 it is named by" in result.output and "Nothing was added" in result.output
    assert not user_file().exists()
    assert not list(Store().models_dir.glob("*.gguf"))


def hf_cache(root, repo, filename, data, revision):
    """The Hub cache's layout: blobs named by sha256, snapshots/REVISION/FILE linking to them."""
    base = root / f"models--{repo.replace('/', '--')}"
    (base / "blobs").mkdir(parents=True)
    (base / "blobs" / sha(data)).write_bytes(data)
    snap = base / "snapshots" / revision / filename
    snap.parent.mkdir(parents=True)
    snap.symlink_to(os.path.relpath(base / "blobs" / sha(data), snap.parent))
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(revision)
    return snap


def test_hf_cache_snapshot_is_found_and_added_with_its_hub_source_offline(tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    rev = "c0ffee" * 6 + "abcd"
    hf_cache(cache, "someone/Tiny-GGUF", "tiny-q4.gguf", GOOD, rev)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network: the cache alone must do
    found = scan_hf_cache()
    assert len(found) == 1 and found[0].sha256 == sha(GOOD)
    assert found[0].add == f"localpanel add hf://someone/Tiny-GGUF/tiny-q4.gguf@{rev}"
    listing = invoke("models", "--scan")
    assert found[0].add in listing.output and "someone/Tiny-GGUF/tiny-q4.gguf" in listing.output
    result = invoke(*found[0].add.split()[1:])
    assert result.exit_code == 0, result.output
    assert models_yaml(tmp_path)["tiny-q4"]["sources"] == [f"hf://someone/Tiny-GGUF/tiny-q4.gguf@{rev}"]
    assert "tiny-q4.gguf" not in invoke("models", "--scan").output  # listed now: no longer offered


def test_lm_studio_tree_is_found_with_architecture_and_size(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home-dir"))
    path = tmp_path / "home-dir" / ".lmstudio" / "models" / "lmstudio-community" / "Tiny-GGUF" / "Tiny-Q8_0.gguf"
    path.parent.mkdir(parents=True)
    path.write_bytes(GOOD)
    (path.parent / "README.md").write_text("not a model")
    found = scan_lmstudio()
    assert [(f.label, f.architecture, f.size, f.sha256) for f in found] == [
        ("lmstudio-community/Tiny-GGUF/Tiny-Q8_0.gguf", "llama", len(GOOD), None)]
    listing = invoke("models", "--scan", "--json")
    item = next(x for x in json.loads(listing.output) if x["where"] == "lm studio")
    assert item["add"] == f"localpanel add {path}" and item["parameters"] == 1024


@pytest.mark.real
def test_weights_from_ollama_run_in_a_poll_with_no_download(real_store, tmp_path, monkeypatch):
    """A real GGUF laid out as Ollama keeps it: added, then polled with --model, with the network off."""
    registry = load_registry()
    smol = real_store.path_for(registry.model("smollm2-135m"))
    root = tmp_path / "ollama"
    (root / "blobs").mkdir(parents=True)
    blob = root / "blobs" / f"sha256-{registry.model('smollm2-135m').sha256}"
    try:
        os.link(smol, blob)
    except OSError:
        shutil.copyfile(smol, blob)
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / "smollm2" / "135m"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"layers": [{"mediaType": "application/vnd.ollama.image.model",
                                                "digest": f"sha256:{registry.model('smollm2-135m').sha256}"}]}))
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    own = tmp_path / "own-models.yaml"  # a registry of the user's own that does not pin these bytes already
    own.write_text("models: {}\npanels: {}\n")
    monkeypatch.setenv("LOCALPANEL_MODELS", str(own))
    added = invoke("add", "ollama://smollm2:135m", "--name", "my-smol")
    assert added.exit_code == 0, added.output
    result = invoke("poll", "Is a local model worth it?", "--model", "my-smol", "--model", "my-smol", "--json", "-q")
    assert result.exit_code == 0, result.output
    t = json.loads(result.output)
    assert [p["name"] for p in t["participants"]] == ["my-smol #1", "my-smol #2"]
    assert all(x["failure"] is None for x in t["rounds"][0]["turns"])
    assert t["panel"] == "models"
