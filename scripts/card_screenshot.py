"""docs/html-card.png: the HTML card of the README's real-size debate, in headless chromium.

Runs the debate the README names (default panel, 3 rounds, seed 7, no early stop) in a scratch store that
borrows this store's models, renders its card with `localpanel show --format html` and screenshots the top.

    .venv/bin/python scripts/card_screenshot.py [--out docs/html-card.png]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from localpanel.weights.store import Store

LOCALPANEL = str(Path(sys.executable).with_name("localpanel"))
DEBATE = ["debate", "Should a five-person startup move its app to Kubernetes now?", "-o", "Yes", "-o", "No", "-o", "Not yet",
          "--rounds", "3", "--seed", "7", "--no-early-stop", "-q"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/html-card.png")
    p.add_argument("--height", type=int, default=1060, help="the screenshot's height in pixels (the top of the card)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as home:
        (Path(home) / "models").symlink_to(Store().models_dir, target_is_directory=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALPANEL_")}
        env.update(LOCALPANEL_HOME=home, HF_HUB_OFFLINE="1")
        start = time.monotonic()
        subprocess.run([LOCALPANEL, *DEBATE], env=env, check=True, stdout=subprocess.DEVNULL)
        seconds = time.monotonic() - start
        card = Path(home) / "card.html"
        subprocess.run([LOCALPANEL, "show", "last", "--format", "html", "--out", str(card)], env=env, check=True)
        text = subprocess.run([LOCALPANEL, "show", "last"], env=env, check=True, capture_output=True, text=True).stdout
        subprocess.run([shutil.which("chromium"), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--window-size=1000,{a.height}", f"--screenshot={Path(a.out).resolve()}", card.as_uri()],
                       check=True, capture_output=True)
    result = next((line for line in text.splitlines() if line.startswith("Result")), "")
    print(f"wrote {a.out}: the debate took {seconds:.0f} s; {result}")


if __name__ == "__main__":
    main()
