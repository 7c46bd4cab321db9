"""`localpanel serve` over real HTTP on 127.0.0.1 (uvicorn in a thread, the scripted backend behind it)."""

import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from localpanel.serve import web
from localpanel.engine.scripted import ScriptedBackend
from localpanel.serve.service import Service

from .test_protocol import ballot, env  # noqa: F401 - env is a fixture

HOSTILE = "Is <script>alert(1)</script> & \"this\" safe?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(env):
    registry, store = env
    backend = ScriptedBackend(default=lambda req: ballot("Yes", "<b>bold</b> & sure.", who=False))
    service = Service(store, registry_file=str(registry.path), make_backend=lambda runtime: backend)
    port = free_port()
    ready = threading.Event()
    thread = threading.Thread(target=web.serve, args=(service, "127.0.0.1", port), kwargs={"on_ready": lambda p: ready.set()},
                              daemon=True)
    thread.start()
    assert ready.wait(10)
    yield f"http://127.0.0.1:{port}", service
    service.close()


def call(url, body=None, headers=None, method=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def finished(base, run_id, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = json.loads(call(f"{base}/api/runs/{run_id}")[2])
        if snap["state"] == "finished":
            return snap
        time.sleep(0.05)
    raise AssertionError(snap)


def test_a_run_started_over_http_streams_its_events_and_ends_as_a_card(server):
    base, service = server
    status, _, body = call(f"{base}/api/runs", {"question": HOSTILE, "options": ["Yes", "No"], "rounds": 1, "seed": 3})
    assert status == 200, body
    run_id = json.loads(body)["run_id"]
    snap = finished(base, run_id)
    assert snap["result"]["label"] == "unanimous" and len(snap["ballots"]) == 4
    # The event stream replays the run from its first event and closes with its state.
    status, headers, stream = call(f"{base}/api/runs/{run_id}/events")
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    kinds = [json.loads(m)["type"] for m in re.findall(r"data: (.*)", stream.decode())]
    assert kinds.count("ballot") == 4 and kinds[-2:] == ["finished", "state"]
    # The card: the question and the rationales escaped, behind a policy that forbids scripts.
    status, headers, card = call(f"{base}/runs/{run_id}")
    assert status == 200 and "script-src" not in headers["content-security-policy"]
    assert b"<script>" not in card and b"&lt;script&gt;" in card and b"&lt;b&gt;bold&lt;/b&gt;" in card
    rows = json.loads(call(f"{base}/api/runs?q=script+safe")[2])
    assert [r["id"] for r in rows] == [run_id]
    assert json.loads(call(f"{base}/api/runs?q=nothing-like-it")[2]) == []
    # An ordinary run directory: the CLI's own library reads it.
    assert (service.store.runs_dir / run_id / "transcript.json").is_file()


@pytest.mark.parametrize("body, headers, status, message", [
    ({"question": "Is it?", "options": ["Only"]}, {}, 400, "at least 2 options"),
    ({"question": "Is it?", "panel": "nope"}, {}, 400, "Unknown panel"),
    ({"question": "Is it?", "rounds": "many"}, {}, 400, "rounds must be a whole number; got 'many'."),
    (b"{not json", {}, 400, "not valid JSON"),
    (b"question=x", {"Content-Type": "application/x-www-form-urlencoded"}, 400, "application/json"),
    ({"question": "Is it?"}, {"Origin": "http://evil.example"}, 400, "from this page"),
    ({"question": "x" * 70000}, {}, 413, "larger than 64 KiB"),
    # issue 23.13: one sentence from the protocol's own limits, never a validation dump or a 500
    ({"question": "Is it?", "seed": -1}, {}, 400, "seed must be a whole number of 0 or more; got -1."),
    ({"question": "Is it?", "panel": 5}, {}, 400, "panel must be the name of a panel"),
    ({"question": "Is it?", "models": ["alpha"] * 65}, {}, 400, "A panel seats at most 64 participants; 65 models"),
    ({"question": "Is it?", "rounds": 21}, {}, 400, "rounds must be a whole number from 1 to 20; got 21."),
    ({"question": "Is it?", "options": [f"o{k}" for k in range(27)]}, {}, 400, "At most 26 options are allowed, got 27."),
])
def test_bad_requests_get_one_sentence_and_start_nothing(server, body, headers, status, message):
    base, service = server
    got, _, answer = call(f"{base}/api/runs", body, headers)
    assert got == status and message in json.loads(answer)["error"] and "\n" not in json.loads(answer)["error"]
    assert not service.store.runs_dir.exists() or not any(service.store.runs_dir.iterdir())


def test_only_this_machine_and_nothing_from_outside(server):
    base, _ = server
    status, _, _ = call(f"{base}/", headers={"Host": "evil.example"})  # DNS rebinding: refused
    assert status == 400
    status, headers, page = call(f"{base}/")
    assert status == 200 and "script-src 'self'" in headers["content-security-policy"]
    for name in ("/", "/app.js", "/app.css"):
        text = call(base + name)[2].decode()
        assert not re.search(r"(?:src|href)=[\"']?(?:https?:)?//", text) and "@import" not in text and "url(http" not in text
    # A run id is never a path: these reach the handler as ".." and "..\\etc" (a "/" would not match the route at
    # all), and the service's own id check refuses them.
    for probe, as_id in (("%2E%2E", ".."), ("%2E%2E%5Cetc", "..\\etc"), ("%2Ehidden", ".hidden")):
        status, _, body = call(f"{base}/api/runs/{probe}")
        assert status == 400 and json.loads(body)["error"] == f"{as_id!r} is not a run id; list runs to see them."
    assert call(f"{base}/api/runs/nope")[0] == 404


def test_a_finished_run_replays_from_the_page_and_cannot_be_resumed(server):
    base, _ = server
    run_id = json.loads(call(f"{base}/api/runs", {"question": "Is it?", "seed": 1})[2])["run_id"]
    finished(base, run_id)
    status, _, body = call(f"{base}/api/runs/{run_id}/resume", {})
    assert status == 400 and "already finished" in json.loads(body)["error"]
    status, _, body = call(f"{base}/api/runs/{run_id}/replay", {})
    assert status == 200 and json.loads(body)["job_id"] == f"{run_id}/replay"
    status, _, stream = call(f"{base}/api/runs/{run_id}/replay/events")  # until the replay ends
    assert status == 200 and b'"state": "finished"' in stream
    snap = json.loads(call(f"{base}/api/runs/{run_id}/replay")[2])
    assert snap["state"] == "finished" and snap["replay"]["identical"] and snap["replay"]["turns_compared"] == 4


def serving(service, host, **kw):
    """A real server on ``host`` (a free port), for a test of the names it answers to."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    ready = threading.Event()
    threading.Thread(target=web.serve, args=(service, host, port), kwargs={"on_ready": lambda p: ready.set(), **kw},
                     daemon=True).start()
    assert ready.wait(10)
    return port


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture
def service(env):
    registry, store = env
    backend = ScriptedBackend(default=lambda req: ballot("Yes", "Sure of it.", who=False))
    service = Service(store, registry_file=str(registry.path), make_backend=lambda runtime: backend)
    yield service
    service.close()


def test_a_server_bound_beyond_the_loopback_names_still_refuses_a_rebinding_host(service):
    """Issue 23.11: any --host but 127.0.0.1/localhost/::1 used to allow every Host ("*"). 127.0.0.2 is on this
    machine's loopback range but not among those names: the path a LAN address takes, without leaving the machine."""
    port = serving(service, "127.0.0.2", allow_hosts=("panel.lan",))
    base = f"http://127.0.0.2:{port}"
    assert call(f"{base}/", headers={"Host": "evil.example"})[0] == 400
    assert call(f"{base}/", headers={"Host": f"evil.example:{port}"})[0] == 400
    assert call(f"{base}/")[0] == 200  # addressed to the bound address itself
    assert call(f"{base}/", headers={"Host": f"panel.lan:{port}"})[0] == 200  # --allow-host
    assert call(f"{base}/", headers={"Host": f"localhost:{port}"})[0] == 200
    assert web.allowed_hosts("0.0.0.0") == ["127.0.0.1", "localhost", "[::1]"]  # a wildcard is no name
    assert "*" not in web.allowed_hosts("192.168.1.5", ["nas.lan"]) and "192.168.1.5" in web.allowed_hosts("192.168.1.5")
    with pytest.raises(Exception, match="not a host name"):
        web.allowed_hosts("0.0.0.0", ["*"])


@pytest.mark.skipif(not ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_ipv6_loopback_answers_its_own_address(service):
    """Issue 23.12: --host ::1 refused every request: the Host header carries [::1]:PORT."""
    port = serving(service, "::1")
    assert call(f"http://[::1]:{port}/")[0] == 200
    assert call(f"http://[::1]:{port}/", headers={"Host": "evil.example"})[0] == 400


def test_event_streams_are_bounded_and_hold_no_worker_thread(env):
    """Issue 23.14: each waiting stream held one of the server's worker threads, so about 40 open streams
    starved every other request. Now streams wait on the event loop, and past MAX_STREAMS a stream is refused
    with a sentence while the rest of the page still answers."""
    registry, store = env
    gate = threading.Event()
    backend = ScriptedBackend(default=lambda req: (gate.wait(20), ballot("Yes", who=False))[1])
    service = Service(store, registry_file=str(registry.path), make_backend=lambda runtime: backend)
    port = serving(service, "127.0.0.1")
    base = f"http://127.0.0.1:{port}"
    run_id = json.loads(call(f"{base}/api/runs", {"question": "Is it?", "seed": 1})[2])["run_id"]
    streams = []
    try:
        for _ in range(web.MAX_STREAMS):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(f"GET /api/runs/{run_id}/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            assert s.recv(64).startswith(b"HTTP/1.1 200")
            streams.append(s)
        status, _, body = call(f"{base}/api/runs/{run_id}/events")
        assert status == 503 and "event streams are open already" in json.loads(body)["error"]
        started = time.monotonic()
        for _ in range(50):  # more requests than the worker threads (40): none waits behind the streams
            assert call(f"{base}/api/runs")[0] == 200
        assert time.monotonic() - started < 10
    finally:
        for s in streams:
            s.close()
        gate.set()
        service.close()


def test_a_search_reads_only_the_runs_that_changed(env, monkeypatch):
    """Issue 23.14: every search keystroke re-read every saved transcript."""
    from localpanel.runs import rundir as transcript_module

    registry, store = env
    service = Service(store, registry_file=str(registry.path),
                      make_backend=lambda runtime: ScriptedBackend(default=lambda req: ballot("Yes", who=False)))
    try:
        for q in ("Is tea good?", "Is coffee good?"):
            job = service.start(q, moderator=False)
            deadline = time.monotonic() + 10
            while not job.done and time.monotonic() < deadline:
                time.sleep(0.01)
        reads = []
        original = transcript_module.RunDir.transcript
        monkeypatch.setattr(transcript_module.RunDir, "transcript", lambda self: (reads.append(self.path), original(self))[1])
        assert [r["question"] for r in service.runs("tea")] == ["Is tea good?"]
        first = len(reads)
        assert first == 2 and [r["question"] for r in service.runs("coffee")] == ["Is coffee good?"]
        assert len(reads) == first  # the second keystroke read nothing again
    finally:
        service.close()
