"""The run events, the one-at-a-time queue and the service under MCP and the web page, on the scripted backend."""

import threading
import time

import pytest

from localpanel import api
from localpanel.engine.scripted import ScriptedBackend
from localpanel.errors import InputError
from localpanel.panel.protocol import DebateSettings
from localpanel.runs.events import EVENT
from localpanel.runs.jobs import MachineLock
from localpanel.serve.service import Service

from .test_protocol import NAMES, ballot, env, script  # noqa: F401 - env is a fixture

MOD = {"vote": "Yes", "rationale": "x"}


def debate_backend():
    backend = script(ScriptedBackend(), [
        {"Ann": ballot("Yes"), "Bob": ballot("No"), "Cy": ballot("No"), "Di": ballot("No")},
        {"Ann": ballot("No", who="Bob"), "Bob": ballot("No"), "Cy": ballot("No"), "Di": ballot("No")},
    ])
    return backend


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


def test_a_debate_tells_its_story_as_events_that_match_the_transcript(env):
    registry, store = env
    events = []
    t = api.start_run("Is it?", ["Yes", "No"], registry=registry, store=store, backend=debate_backend(),
                      settings=DebateSettings(rounds=3), with_moderator=False, on_event=events.append)
    kinds = [e.type for e in events]
    assert kinds.count("turn_started") == 8 and kinds.count("ballot") == 8
    assert kinds[-1] == "finished" and kinds.count("round_finished") == 2
    # Each ballot follows its own start, and a round's tally comes after its last ballot.
    assert kinds.index("round_finished") == max(i for i, k in enumerate(kinds) if k == "ballot" and events[i].round == 1) + 1
    ballots = [e for e in events if e.type == "ballot"]
    assert sorted((b.round, b.participant, b.vote) for b in ballots) == sorted(
        (turn.round, turn.participant, turn.vote) for r in t.rounds for turn in r.turns)
    assert [b.round for b in ballots] == [1] * 4 + [2] * 4
    rounds = [e for e in events if e.type == "round_finished"]
    assert [r.counts for r in rounds] == [r.tally.counts for r in t.rounds]
    assert events[-1].label == t.result.label and events[-1].counts == t.result.counts
    assert next(b for b in ballots if b.round == 2 and b.participant == "Ann").attributed_to == "Bob"
    # Every event survives JSON: what crosses to the web page and MCP is what the CLI saw.
    assert [EVENT.validate_json(e.model_dump_json()) for e in events] == events


def test_a_resumed_run_tells_the_ballots_it_already_had_first(env):
    registry, store = env
    backend = debate_backend()
    stopping = []

    def stop_after_three(event):
        if event.type == "ballot":
            stopping.append(event)
            if len(stopping) == 3:
                raise KeyboardInterrupt

    started = []
    with pytest.raises(KeyboardInterrupt):
        api.start_run("Is it?", ["Yes", "No"], registry=registry, store=store, backend=backend,
                      settings=DebateSettings(rounds=2), with_moderator=False, on_event=stop_after_three,
                      on_start=started.append)
    events = []
    api.resume(started[0], store=store, backend=backend, on_event=events.append)
    earlier = [e for e in events if e.type == "ballot" and e.earlier]
    assert [e.participant for e in earlier] == [e.participant for e in stopping]
    assert sum(1 for e in events if e.type == "ballot") == 8 and events[-1].type == "finished"


@pytest.fixture
def service(env):
    registry, store = env
    gate = threading.Event()
    backend = ScriptedBackend(default=lambda req: (gate.wait(10), ballot("Yes", who=False))[1])
    svc = Service(store, registry_file=str(registry.path), make_backend=lambda runtime: backend)
    svc.gate = gate
    yield svc
    gate.set()
    svc.close()


@pytest.mark.parametrize("kwargs, message", [
    ({"options": ["Only"]}, "at least 2 options"),
    ({"panel": "nope"}, "Unknown panel 'nope'"),
    ({"question": "x" * 5000}, "keep it under"),
    ({"rounds": 0}, "rounds must be"),
    ({"question": "  "}, "Give a question"),
])
def test_bad_arguments_are_one_sentence_and_write_nothing(service, kwargs, message):
    args = {"question": "Is it?", **kwargs}
    with pytest.raises(InputError) as err:
        service.start(args.pop("question"), **args)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not service.store.runs_dir.exists() or not any(service.store.runs_dir.iterdir())


def test_runs_queue_one_at_a_time_and_say_so(service):
    first = service.start("First?", moderator=False)
    wait_for(lambda: first.state == "running")
    second = service.start("Second?", moderator=False)
    snap = service.snapshot(second.id)
    assert snap["state"] == "queued" and snap["queue_position"] == 1
    assert "queue" in snap["waiting_for"]
    assert (service.store.runs_dir / second.id / "manifest.json").is_file()  # claimed at once: a run id now
    service.gate.set()
    wait_for(lambda: second.done)
    assert first.state == second.state == "finished"
    assert service.snapshot(first.id)["result"]["line"].startswith("Unanimous")
    assert [e["type"] for e in service.events(second.id)][-1] == "finished"


def test_another_process_holding_the_machine_queues_the_run(service):
    other = MachineLock(service.store.home / "run.lock")  # as another server on this machine would hold it
    assert other.try_acquire()
    job = service.start("Is it?", moderator=False)
    wait_for(lambda: job.waiting_for is not None)
    snap = service.snapshot(job.id)
    assert snap["state"] == "queued" and snap["waiting_for"] == "another localpanel run on this machine"
    other.release()
    service.gate.set()
    wait_for(lambda: job.done)
    assert job.state == "finished"


def test_stopping_the_server_leaves_the_run_resumable(env, service):
    registry, store = env
    job = service.start("Is it?", moderator=False)
    wait_for(lambda: job.state == "running")
    stopper = threading.Thread(target=service.close)
    stopper.start()
    time.sleep(0.2)
    service.gate.set()  # the turn in flight ends; the next event stops the run
    stopper.join(10)
    assert job.state == "interrupted"
    snap = service.snapshot(job.id)
    assert snap["state"] == "interrupted" and snap["resume"] == f"localpanel poll --resume {job.id}"
    finished = api.resume(job.id, store=store, backend=ScriptedBackend(default=lambda req: ballot("Yes", who=False)))
    assert finished.result.label == "unanimous"


def test_a_run_is_read_by_id_only_never_by_path(service, tmp_path):
    for bad in ("../etc", "/etc", "a/b", ""):
        with pytest.raises(InputError):
            service.snapshot(bad)


def capped(env):
    """The scripted registry with a panel that carries a memory limit (as the shipped hub-small does)."""
    from localpanel.weights.registry import load_registry

    registry, store = env
    path = registry.path
    text = path.read_text().replace("panels:\n", "panels:\n  capped:\n    moderator: alpha\n    max_memory: 1GiB\n"
                                    "    participants:\n      - {name: Ann, model: alpha}\n      - {name: Bob, model: beta}\n", 1)
    path.write_text(text)
    return load_registry(path), store


def test_a_panels_memory_limit_is_the_backends_and_the_manifests(env, monkeypatch):
    """Issue 23.4: start_run built the backend from the caller's runtime, then recorded the panel's limit in the
    manifest only: the manifest said 1 GiB while the backend ran unbounded."""
    registry, store = capped(env)
    built = []

    def spy(runtime):
        built.append(runtime)
        return ScriptedBackend(default=lambda req: ballot("Yes", who=False))

    monkeypatch.setattr(api, "_backend", spy)
    t = api.start_run("Is it?", ["Yes", "No"], registry=registry, store=store, panel="capped", with_moderator=False)
    assert t.runtime.max_memory == 2**30
    assert [r.max_memory for r in built] == [2**30] and built[0] == t.runtime
    # the service: the worker's backend runs under the run's own runtime
    svc = Service(store, registry_file=str(registry.path), make_backend=spy)
    try:
        job = svc.start("Is it?", panel="capped", moderator=False)
        wait_for(lambda: job.state == "finished")
        assert svc.runner.backend_runtime == api.load_run(job.id, store).runtime and svc.runner.backend_runtime.max_memory == 2**30
    finally:
        svc.close()


def test_the_service_resumes_and_replays_a_run_under_its_own_runtime(env):
    """Issue 23.5: the page and MCP resumed and replayed with the server's runtime while the manifest claimed the
    run's (one at a time, another batch size)."""
    from localpanel.engine.runtime import RuntimeSettings

    registry, store = env
    built = []

    def spy(runtime):
        built.append(runtime)
        return ScriptedBackend(default=lambda req: ballot("Yes", who=False))

    own = RuntimeSettings(batch_sequences=False, batch_size=64)
    prepared = api.prepare_run(api.RunRequest(question="Is it?", options=["Yes", "No"], runtime=own, moderator=False),
                               registry=registry, store=store, backend=spy(RuntimeSettings()))
    svc = Service(store, runtime=RuntimeSettings(threads=1), registry_file=str(registry.path), make_backend=spy)
    try:
        job = svc.resume(prepared.id)
        wait_for(lambda: job.state == "finished")
        assert built[-1] == own and api.load_run(prepared.id, store).runtime == own
        replay = svc.replay(prepared.id)
        wait_for(lambda: replay.state == "finished")
        assert built[-1] == own and all(r.threads is None for r in built)  # never the server's threads=1
    finally:
        svc.close()
