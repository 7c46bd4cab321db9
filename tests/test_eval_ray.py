"""A real local Ray instance against the local executor: the same seeds give the same runs, ballot for ballot."""

import pytest

from localpanel.eval import api as eval_api
from localpanel.eval.questions import arithmetic
from localpanel.eval.runner import EvalSettings, LocalExecutor, RayExecutor, jobs_for, load_manifest
from localpanel.registry import load_registry
from localpanel.runtime import RuntimeSettings
from localpanel.transcript import RunDir

pytestmark = [pytest.mark.real, pytest.mark.ray]
ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One real local Ray for the module: each start costs about a minute on 2 cores. An executor leaves a Ray it
    did not start running (tests/test_eval.py checks, on a stand-in, that it shuts down one it started)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def ballots(eval_dir):
    manifest = load_manifest(eval_dir)
    out = {}
    for job in jobs_for(manifest):
        t = RunDir(eval_dir / job.dir).transcript()
        out[job.dir] = [(x.participant, x.round, x.text, x.confidence) for r in t.rounds for x in r.turns]
    return out


def test_ray_executor_gives_the_local_executors_runs(store_with_weights, tmp_path):
    registry = load_registry()
    runtime = RuntimeSettings(threads=2)
    settings = EvalSettings(rounds=2, seed=0)
    questions = arithmetic(3, 0)
    dirs = {}
    for name in ("local", "ray"):
        dirs[name] = eval_api.prepare(questions, registry=registry, store=store_with_weights, panel=registry.panel("tiny"),
                                      settings=settings, runtime=runtime, out_dir=tmp_path / name)
    local = LocalExecutor(store_with_weights, runtime)
    try:
        local_report = eval_api.run(dirs["local"], local)
    finally:
        local.close()
    remote = RayExecutor(runtime)  # the module's real local Ray: one actor asking for the 2 CPUs it spins
    try:
        assert len(remote.actors) == 1
        ray_report = eval_api.run(dirs["ray"], remote)
    finally:
        remote.close()
    assert ray.is_initialized()  # not this executor's to stop
    local_ballots, ray_ballots = ballots(dirs["local"]), ballots(dirs["ray"])
    assert len(local_ballots) == 3 and all(len(b) == 8 for b in local_ballots.values())
    assert ray_ballots == local_ballots
    assert ray_report.modes == local_report.modes


def test_two_ray_actors_in_another_job_order_give_the_same_ballots(store_with_weights, tmp_path):
    """Two actors of one thread each take the questions in another order than the local run (which runs them
    backwards): each question's context is sized for it alone, so no ballot depends on what ran before it."""
    registry = load_registry()
    runtime = RuntimeSettings(threads=1)
    settings = EvalSettings(rounds=1, seed=1)
    questions = arithmetic(4, 1)
    dirs = {name: eval_api.prepare(questions, registry=registry, store=store_with_weights, panel=registry.panel("tiny"),
                                   settings=settings, runtime=runtime, out_dir=tmp_path / name) for name in ("local", "ray")}

    class Backwards(LocalExecutor):
        def run(self, jobs, manifest, eval_dir, on_done):
            super().run(list(reversed(jobs)), manifest, eval_dir, on_done)

    local = Backwards(store_with_weights, runtime)
    try:
        eval_api.run(dirs["local"], local)
    finally:
        local.close()
    with pytest.raises(Exception, match=r"--workers 3 at 1 thread each needs 3 CPUs and the Ray cluster has 2"):
        RayExecutor(runtime, workers=3)
    remote = RayExecutor(runtime, workers=2)
    try:
        assert len(remote.actors) == 2
        eval_api.run(dirs["ray"], remote)
    finally:
        remote.close()
    assert ballots(dirs["ray"]) == ballots(dirs["local"])
