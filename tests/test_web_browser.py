"""A real headless browser (Debian's chromium, driven by Selenium through chromium-driver) uses `localpanel serve`
on the real tiny panel: it fills the form, sees ballots land before the run ends, then finds the final card."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .test_web import free_port

pytestmark = [pytest.mark.real, pytest.mark.browser]

LOCALPANEL = str(Path(sys.executable).with_name("localpanel"))
QUESTION = "Is a local model worth it for private notes?"


def browser_paths():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return chromium, driver


@pytest.fixture
def page(store_with_weights):
    chromium, chromedriver = browser_paths()
    if not (chromium and chromedriver):
        pytest.skip("no chromium and chromedriver here: `apt-get install chromium chromium-driver` (scripts/setup "
                    "does it when run as root) to run the real-browser test")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service as ChromeService

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALPANEL_")}
    env.update(LOCALPANEL_HOME=str(store_with_weights.home), HF_HUB_OFFLINE="1", SE_OFFLINE="true")
    server = subprocess.Popen([LOCALPANEL, "serve", "--port", str(port), "--threads", "2"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    said = []
    while not any("localpanel is at" in line for line in said) and server.poll() is None and len(said) < 50:
        said.append(server.stdout.readline())
    assert f"http://127.0.0.1:{port}/" in said[-1], said
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1600",
                "--disable-gpu", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=ChromeService(executable_path=chromedriver), options=options)
    try:
        yield driver, f"http://127.0.0.1:{port}", store_with_weights
    finally:
        driver.quit()
        server.terminate()
        server.wait(30)


def until(predicate, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s")


def test_a_person_starts_a_debate_and_watches_the_ballots_land(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver, base, store = page
    driver.get(base + "/")
    until(lambda: any(o.get_attribute("value") == "tiny" for o in driver.find_elements(By.CSS_SELECTOR, "#panel option")), 10)
    Select(driver.find_element(By.ID, "panel")).select_by_value("tiny")
    driver.find_element(By.ID, "question").send_keys(QUESTION)
    driver.find_element(By.ID, "options").send_keys("Yes\nNo\nIt depends")
    rounds = driver.find_element(By.ID, "rounds")
    rounds.clear()
    rounds.send_keys("2")
    driver.find_element(By.ID, "go").click()

    # The first ballot shows while the run is still going.
    until(lambda: driver.find_elements(By.CSS_SELECTOR, "#ballots .ballot"), 120)
    state_then = driver.find_element(By.ID, "live-state").text
    assert not state_then.startswith("Finished"), state_then
    if os.environ.get("LOCALPANEL_SCREENSHOT"):
        driver.save_screenshot(os.environ["LOCALPANEL_SCREENSHOT"])

    # Then the end: the result, every ballot, the charts of a debate, and the card.
    until(lambda: driver.find_element(By.ID, "card-link").is_displayed(), 300)
    ballots = driver.find_elements(By.CSS_SELECTOR, "#ballots .ballot")
    run_id = driver.execute_script("return location.hash.slice(1)")
    transcript = store.runs_dir / run_id / "transcript.json"
    assert transcript.is_file()
    t = json.loads(transcript.read_text())
    assert len(ballots) == sum(len(r["turns"]) for r in t["rounds"])
    assert driver.find_element(By.CSS_SELECTOR, "#result .result-line").text == t["result"]["line"]
    if len(t["rounds"]) > 1:
        assert driver.find_elements(By.CSS_SELECTOR, "#votes-chart svg")
    assert any(run_id in a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#run-list a"))
    driver.get(base + f"/runs/{run_id}")
    assert driver.find_element(By.TAG_NAME, "h1").text == QUESTION


def test_ctrl_c_stops_the_server_and_leaves_the_run_resumable(store_with_weights):
    """A real `localpanel serve` on the tiny panel, stopped with SIGINT once a debate's first ballot is in."""
    import signal
    import urllib.request

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALPANEL_")}
    env.update(LOCALPANEL_HOME=str(store_with_weights.home), HF_HUB_OFFLINE="1")
    server = subprocess.Popen([LOCALPANEL, "serve", "--port", str(port), "--threads", "2"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while "localpanel is at" not in server.stderr.readline():
            assert server.poll() is None
        base = f"http://127.0.0.1:{port}"
        body = json.dumps({"question": QUESTION, "panel": "tiny", "rounds": 3, "seed": 5}).encode()
        req = urllib.request.Request(f"{base}/api/runs", body, {"Content-Type": "application/json"})
        run_id = json.loads(urllib.request.urlopen(req, timeout=30).read())["run_id"]
        journal = store_with_weights.runs_dir / run_id / "turns.jsonl"
        until(lambda: journal.read_text().count("\n") >= 1, 120)
        server.send_signal(signal.SIGINT)
        assert server.wait(60) == 0
    finally:
        if server.poll() is None:
            server.kill()
    run_dir = store_with_weights.runs_dir / run_id
    assert not (run_dir / "transcript.json").exists()  # stopped before the end
    kept = journal.read_text().count("\n")
    resumed = subprocess.run([LOCALPANEL, "debate", "--resume", run_id, "--json", "-q"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    t = json.loads(resumed.stdout)
    assert sum(len(r["turns"]) for r in t["rounds"]) >= kept >= 1
