"""Where localpanel keeps its things: the home directory the store, the user's models.yaml and the run lock
live under. Below the registry and the store alike, so that neither imports the other for it."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def default_home() -> Path:
    """$LOCALPANEL_HOME, else the platform's user data directory."""
    env = os.environ.get("LOCALPANEL_HOME")
    return Path(env).expanduser() if env else Path(platformdirs.user_data_dir("localpanel", appauthor=False))
