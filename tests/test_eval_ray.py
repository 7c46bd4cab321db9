"""A real local Ray instance against the local executor: the same seeds give the same runs, ballot for ballot.

The local runs are made first, for both tests, and only then is Ray started, once for the module: Ray's own
processes running beside llama.cpp's spinning threads make a local run many times slower, and each start of
Ray costs about a minute on 2 cores."""

import pytest

from localpanel.engine.runtime import RuntimeSettings
from localpanel.eval import api as eval_api
from localpanel.eval.questions import arithmetic
from localpanel.eval.runner import EvalSettings, LocalExecutor, RayExecutor, jobs_for, load_manifest
from localpanel.runs.rundir import RunDir
from localpanel.weights.registry import load_registry
from localpanel.weights.store import Store

pytestmark = [pytest.mark.real, pytest.mark.ray]
ray = pytest.importorskip("ray")

# (runtime, settings, questions) of each test's eval
CASES = {
    "one-actor": (RuntimeSettings(threads=2), EvalSettings(rounds=2, seed=0), lambda: arithmetic(2, 0)),
    "two-actors": (RuntimeSettings(threads=1), EvalSettings(rounds=1, seed=1), lambda: arithmetic(4, 1)),
}


def ballots(eval_dir):
    manifest = load_manifest(eval_dir)
    out = {}
    for job in jobs_for(manifest):
        t = RunDir(eval_dir / job.dir).transcript()
        out[job.dir] = [(x.participant, x.round, x.text, x.confidence) for r in t.rounds for x in r.turns]
    return out


@pytest.fixture(scope="module")
def evals(real_store, tmp_path_factory):
    """Each case's eval, prepared twice (local, ray) in a store sharing the real weights, with the local one run
    (the two-actor case backwards, so that the two orders differ); then the module's one real local Ray."""
    home = tmp_path_factory.mktemp("ray-home")
    (home / "models").symlink_to(real_store.models_dir, target_is_directory=True)
    store = Store(home)
    registry = load_registry()

    class Backwards(LocalExecutor):
        def run(self, jobs, manifest, eval_dir, on_done):
            super().run(list(reversed(jobs)), manifest, eval_dir, on_done)

    out = {}
    for case, (runtime, settings, questions) in CASES.items():
        dirs = {name: eval_api.prepare(questions(), registry=registry, store=store, panel=registry.panel("tiny"),
                                       settings=settings, runtime=runtime, out_dir=home / case / name)
                for name in ("local", "ray")}
        local = (Backwards if case == "two-actors" else LocalExecutor)(store, runtime)
        try:
            dirs["report"] = eval_api.run(dirs["local"], local)
        finally:
            local.close()
        out[case] = dirs
    out["home"] = home  # the actors' store: the same weights
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield out
    ray.shutdown()


def test_ray_executor_gives_the_local_executors_runs(evals):
    """Question 0 is left interrupted with three journaled turns (as a killed local eval leaves it): the worker
    resumes it from them and its directory, journal first, is never removed (issue 32.2: it was replaced)."""
    dirs = evals["one-actor"]
    job = jobs_for(load_manifest(dirs["ray"]))[0]
    made, interrupted = dirs["local"] / job.dir, dirs["ray"] / job.dir
    interrupted.mkdir(parents=True)
    (interrupted / "manifest.json").write_text((made / "manifest.json").read_text())
    kept = "".join((made / "turns.jsonl").read_text().splitlines(keepends=True)[:3])
    (interrupted / "turns.jsonl").write_text(kept)
    inode = interrupted.stat().st_ino
    remote = RayExecutor(CASES["one-actor"][0], home=evals["home"])  # one actor asking for the 2 CPUs it spins
    try:
        assert len(remote.actors) == 1
        ray_report = eval_api.run(dirs["ray"], remote)
    finally:
        remote.close()
    assert ray.is_initialized()  # the module's: not this executor's to stop
    assert interrupted.stat().st_ino == inode and (interrupted / "turns.jsonl").read_text().startswith(kept)
    local_ballots, ray_ballots = ballots(dirs["local"]), ballots(dirs["ray"])
    assert len(local_ballots) == 2 and all(len(b) == 8 for b in local_ballots.values())
    assert ray_ballots == local_ballots
    assert ray_report.modes == dirs["report"].modes


def test_two_ray_actors_in_another_job_order_give_the_same_ballots(evals):
    """Two actors of one thread each take the questions in another order than the local run (which ran them
    backwards): each question's context is sized for it alone, so no ballot depends on what ran before it."""
    dirs = evals["two-actors"]
    runtime = CASES["two-actors"][0]
    with pytest.raises(Exception, match=r"--workers 3 at 1 thread each needs 3 CPUs and the Ray cluster has 2"):
        RayExecutor(runtime, workers=3, home=evals["home"])
    remote = RayExecutor(runtime, workers=2, home=evals["home"])
    try:
        assert len(remote.actors) == 2
        eval_api.run(dirs["ray"], remote)
    finally:
        remote.close()
    assert ballots(dirs["ray"]) == ballots(dirs["local"])
