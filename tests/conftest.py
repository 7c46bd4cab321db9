"""Shared fixtures: an isolated store per test, the real default weights, a fake Hub on 127.0.0.1."""

from __future__ import annotations

import os

# Read by huggingface_hub at import time, so set before anything imports it.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from localpanel.weights.registry import load_registry, shipped_registry_path  # noqa: E402
from localpanel.weights.store import Store, default_home  # noqa: E402

REAL_HOME = default_home()  # where `scripts/test` pulled the default panel, before any test moves it
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test touches the real store, HF cache or working directory."""
    home = tmp_path / "home"
    monkeypatch.setenv("LOCALPANEL_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("LOCALPANEL_MODELS", raising=False)
    monkeypatch.delenv("LOCALPANEL_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    return home


@pytest.fixture(scope="session")
def real_store() -> Store:
    """The store holding the default panel's real weights (pulled once if `scripts/test` did not)."""
    store = Store(REAL_HOME)
    registry = load_registry(shipped_registry_path())
    for name in ("smollm2-135m", "gemma3-270m"):
        store.pull(registry.model(name))
    return store


@pytest.fixture(scope="session")
def real_size_store(real_store) -> Store:
    """The same store with the real-size default panel's weights as well (Qwen2.5-Coder 1.5B and 0.5B)."""
    registry = load_registry(shipped_registry_path())
    for participant in registry.panel("default").participants:
        real_store.pull(registry.model(participant.model))
    return real_store


@pytest.fixture
def store_with_weights(real_store, isolated) -> Store:
    """A fresh store for this test that shares the real weights (runs and pins stay private)."""
    home = isolated
    home.mkdir(parents=True, exist_ok=True)
    (home / "models").symlink_to(real_store.models_dir, target_is_directory=True)
    return Store(home)


@pytest.fixture
def registry():
    return load_registry(shipped_registry_path())
