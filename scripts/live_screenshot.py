"""docs/live-page.png: `localpanel serve` in headless chromium during a real-size debate, taken once the second
round's ballots have begun to land (so the charts of round 1 and the live progress line are on it).

    .venv/bin/python scripts/live_screenshot.py [--panel default] [--out docs/live-page.png]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from localpanel.weights.store import Store

LOCALPANEL = str(Path(sys.executable).with_name("localpanel"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--panel", default="default")
    p.add_argument("--out", default="docs/live-page.png")
    p.add_argument("--after", type=int, default=6, help="take it when this many ballots are on the page")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as home:
        (Path(home) / "models").symlink_to(Store().models_dir, target_is_directory=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALPANEL_")}
        env.update(LOCALPANEL_HOME=home, HF_HUB_OFFLINE="1", SE_OFFLINE="true")
        server = subprocess.Popen([LOCALPANEL, "serve", "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True)
        while "localpanel is at" not in server.stderr.readline():
            pass
        options = Options()
        options.binary_location = shutil.which("chromium")
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,1500", "--hide-scrollbars"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=ChromeService(executable_path=shutil.which("chromedriver")), options=options)
        try:
            driver.get(f"http://127.0.0.1:{port}/")
            time.sleep(1)
            Select(driver.find_element(By.ID, "panel")).select_by_value(a.panel)
            driver.find_element(By.ID, "question").send_keys("Should a five-person startup move its app to Kubernetes now?")
            driver.find_element(By.ID, "options").send_keys("Yes\nNo\nNot yet")
            rounds = driver.find_element(By.ID, "rounds")
            rounds.clear()
            rounds.send_keys("3")
            driver.find_element(By.ID, "go").click()
            while len(driver.find_elements(By.CSS_SELECTOR, "#ballots .ballot")) < a.after:
                time.sleep(0.2)
            time.sleep(1.5)  # the round-1 charts and a token count on the progress line
            driver.execute_script("document.getElementById('live').scrollIntoView()")
            driver.save_screenshot(a.out)
            print(f"wrote {a.out}: {driver.find_element(By.ID, 'progress').text}")
        finally:
            driver.quit()
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
