"""The lockstep scheduler: turns of one group, as coroutines, decoded side by side in one context.

Each turn first evaluates its own new prompt tokens alone, in the order given, and samples at once; then, step
by step, every unfinished turn's evaluation goes into one batch, in that order. A batch is thus composed from
what the turns need and nothing else (never from timing), which keeps a run, its resume and its replay
identical.
"""

from __future__ import annotations

import time
from typing import Callable

from localpanel.engine.llama_context import Context, ContextFull, Sequence
from localpanel.engine.runtime import Generation


def lockstep(ctx: Context, turns: list[tuple[Sequence, object]], on_done: Callable[[int, Generation], None]) -> None:
    """Run turn coroutines side by side: first each one's prompt alone, in the order of ``turns``; then each
    step, every unfinished one's evaluation goes into one batch, in that order. The batches thus follow
    from what the turns need, and nothing else.

    Each turn is charged its own sampling time plus a share of each batch by the tokens it put in, so the
    turns' seconds add up to the wall time; ``prompt_seconds`` is its share of its first batch."""
    spent = [0.0] * len(turns)
    prompt: list[float | None] = [None] * len(turns)
    live: list[tuple[int, tuple[list[int], bool]]] = []  # (turn, the evaluation it asks for)

    def host(seconds: float) -> None:  # time running the decoders, for the bench
        if ctx.stats is not None:
            ctx.stats.host_seconds += seconds

    def advance(j: int, first: bool = False, error: BaseException | None = None) -> None:
        coroutine = turns[j][1]
        t0 = time.perf_counter()
        try:
            want = next(coroutine) if first else coroutine.throw(error) if error else coroutine.send(None)
        except StopIteration as stop:
            spent[j] += time.perf_counter() - t0
            host(time.perf_counter() - t0)
            g: Generation = stop.value
            g.seconds, g.prompt_seconds = spent[j], prompt[j] or 0.0
            on_done(j, g)
            return
        spent[j] += time.perf_counter() - t0
        host(time.perf_counter() - t0)
        live.append((j, want))

    def run(batch: list[tuple[int, tuple[list[int], bool]]]) -> None:
        fits = [(j, w) for j, w in batch if turns[j][0].n_past + len(w[0]) <= turns[j][0].n_ctx]
        error = None
        t0 = time.perf_counter()
        if fits:
            try:
                ctx.step([(turns[j][0], tokens, all_logits) for j, (tokens, all_logits) in fits])
            except ContextFull as exc:
                error = exc
        dt = time.perf_counter() - t0
        total = sum(len(w[0]) for _, w in fits) or 1
        for j, (tokens, _) in fits:
            share = dt * len(tokens) / total
            spent[j] += share
            if prompt[j] is None:
                prompt[j] = share
        fitted = {j for j, _ in fits}
        for j, _ in batch:
            full = ContextFull(f"the conversation needs more than the {turns[j][0].n_ctx}-token context")
            advance(j, error=error if j in fitted else full)

    for j in range(len(turns)):
        advance(j, first=True)
    # Each turn's first evaluation (its new prompt tokens) runs alone, in order, and that turn samples at
    # once: the first ballot token comes after one prompt instead of all of them. Prompts are matrix-matrix
    # work either way, so this costs no throughput; decoding steps then run together.
    opening = sorted(live)
    live.clear()
    for want in opening:
        run([want])
    while live:
        batch = sorted(live)
        live.clear()
        run(batch)
