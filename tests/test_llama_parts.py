"""The llama.cpp backend's parts, each on its own: context sizing, the lockstep scheduler (on a fake context),
the model cache and the context pool (on the real tiny models)."""

import pytest

from localpanel.engine.llama_context import ContextFull, Stats
from localpanel.engine.llama_models import ContextPool, ModelCache, context_size
from localpanel.engine.lockstep import lockstep
from localpanel.engine.runtime import Generation, RuntimeSettings
from localpanel.weights.registry import load_registry, shipped_registry_path


def test_a_context_is_sized_by_its_largest_request_within_the_window():
    assert context_size(4096, [100, 700]) == 768  # rounded up to 256
    assert context_size(4096, [10]) == 512  # never below 512
    assert context_size(4096, [100, None]) == 4096  # no hint: the whole window
    assert context_size(2048, [5000]) == 2048  # never above the window


class FakeSeq:
    def __init__(self, n_ctx=100):
        self.n_past, self.n_ctx = 0, n_ctx


class FakeContext:
    """Records each step's work: which sequences, with how many tokens, in which order."""

    def __init__(self, seqs):
        self.seqs, self.steps, self.stats = seqs, [], Stats()

    def step(self, work):
        self.steps.append([(self.seqs.index(seq), len(tokens)) for seq, tokens, _ in work])
        for seq, tokens, _ in work:
            seq.n_past += len(tokens)


def scripted_turn(prompt: int, steps: int, log: list, name: str):
    """A turn coroutine: its prompt, then ``steps`` one-token evaluations."""
    yield [0] * prompt, False
    for _ in range(steps):
        yield [0], False
    log.append(name)
    return Generation(text=name, tokens=[1] * steps)


def test_lockstep_evaluates_each_prompt_alone_in_order_then_decodes_together():
    seqs = [FakeSeq(), FakeSeq(), FakeSeq()]
    ctx = FakeContext(seqs)
    log, done = [], []
    turns = [(seqs[0], scripted_turn(5, 2, log, "a")), (seqs[1], scripted_turn(3, 1, log, "b")),
             (seqs[2], scripted_turn(4, 3, log, "c"))]
    lockstep(ctx, turns, lambda j, g: done.append((j, g.text, g.seconds >= 0)))
    # Prompts one by one, in the turns' order; then each step holds every unfinished turn, in that order.
    assert ctx.steps == [[(0, 5)], [(1, 3)], [(2, 4)], [(0, 1), (1, 1), (2, 1)], [(0, 1), (2, 1)], [(2, 1)]]
    assert [d[1] for d in done] == ["b", "a", "c"] and all(d[2] for d in done)
    assert ctx.stats.host_seconds > 0


def test_lockstep_tells_a_turn_its_context_is_full_and_runs_the_others():
    seqs = [FakeSeq(n_ctx=6), FakeSeq()]
    ctx = FakeContext(seqs)
    seen = {}

    def turn(prompt, steps, name):
        try:
            yield [0] * prompt, False
            for _ in range(steps):
                yield [0], False
        except ContextFull as exc:
            seen[name] = str(exc)
            return Generation(text="", tokens=[], failure=str(exc))
        return Generation(text=name, tokens=[])

    done = []
    lockstep(ctx, [(seqs[0], turn(5, 3, "small")), (seqs[1], turn(5, 3, "big"))], lambda j, g: done.append(g))
    assert "6-token context" in seen["small"] and "big" not in seen
    assert sorted(g.text for g in done) == ["", "big"]


@pytest.mark.real
def test_the_cache_unloads_the_least_recently_used_model_and_the_pool_sizes_contexts(real_store):
    registry = load_registry(shipped_registry_path())
    smol, gemma = registry.model("smollm2-135m"), registry.model("gemma3-270m")
    p_smol, p_gemma = real_store.path_for(smol), real_store.path_for(gemma)
    limit = max(p_smol.stat().st_size, p_gemma.stat().st_size) + 1  # room for one of them at a time
    cache = ModelCache(RuntimeSettings(max_memory=limit))
    try:
        counted = cache.vocab(smol, p_smol)
        assert not cache.loaded and cache.is_known(p_smol)
        first = cache.get(smol, p_smol)
        assert cache.vocab_only == {} and first.vocab.n == counted.vocab.n  # the counted vocabulary is taken over
        cache.get(gemma, p_gemma)
        assert list(cache.loaded) == [p_gemma] and cache.loads == 2  # smol went to make room
        pool = ContextPool(cache.settings, 1, Stats())
        lm = cache.get(gemma, p_gemma)
        a = pool.get(lm, ("x", "y"), 512)
        assert pool.get(lm, ("x", "y"), 512) is a and len(a.seqs) == 2 and a.n_ctx == 512
        b = pool.get(lm, ("x", "y"), 768)  # another size: made anew, the old one freed
        assert b is not a and b.n_ctx == 768 and a.ctx is None
    finally:
        cache.close()
