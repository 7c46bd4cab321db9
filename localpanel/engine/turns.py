"""One turn on llama.cpp, as a coroutine the lockstep scheduler drives, and the rebuild of lost states.

A turn renders its conversation, evaluates only what its sequence does not hold yet (the options' other
rotations share that prefix, see ``rotations_of``), then decodes under the ballot plan. When a sequence no
longer holds exactly the earlier turns of its conversation (a resumed run, a model unloaded under
--max-memory), ``rebuild`` clears the group and evaluates the earlier rounds again, round by round, in the
same lockstep as the first time, with the recorded tokens forced.
"""

from __future__ import annotations

from localpanel.engine.copyguard import Guard, TokenGuard, WordGuard
from localpanel.engine.decoding import ReplayMismatch, Rotations, common_prefix, decode_steps
from localpanel.engine.grammar import compile_schema
from localpanel.engine.llama_context import Context, ContextFull, Sequence
from localpanel.engine.llama_models import LoadedModel
from localpanel.engine.lockstep import lockstep
from localpanel.engine.runtime import Generation, GenerationRequest, Message, TokenCallback


def turn(
    lm: LoadedModel,
    seq: Sequence,
    messages: list[Message],
    request: GenerationRequest,
    forced: list[int] | None,
    on_token: TokenCallback | None,
):
    """One turn as a coroutine: it yields the prompt's new tokens, then what the decoder asks for."""
    prompt = lm.fmt.render(messages)
    if seq.text and prompt.startswith(seq.text) and not seq.dirty:
        known = seq.text
    else:
        seq.reset()
        known = ""
    cached = seq.n_past
    to_eval = seq.pending + new_tokens(lm, prompt, known)
    prompt_tokens = cached + len(to_eval)
    rotations = rotations_of(lm, messages, known, seq.pending, to_eval, cached)
    plan = compile_schema(request.schema_).keeping_to(request.scripts)
    if prompt_tokens + request.max_tokens > seq.n_ctx:
        return Generation(
            text="", tokens=[], prompt_tokens=prompt_tokens, cached_tokens=cached,
            failure=f"the prompt ({prompt_tokens} tokens) and a ballot of up to {request.max_tokens} tokens "
            f"do not fit the {seq.n_ctx}-token context",
        )
    seq.dirty = True
    try:
        yield (to_eval[: rotations.base - cached] if rotations else to_eval), False
        guard = copy_guard(lm.vocab, request)
        decoded = yield from decode_steps(
            seq, lm.vocab, plan, request.sampling, request.seed, request.max_tokens, forced=forced,
            on_token=on_token, rotations=rotations, guard=guard,
        )
    except ContextFull as exc:
        seq.reset()
        return Generation(text="", tokens=[], prompt_tokens=prompt_tokens, cached_tokens=cached, failure=str(exc))
    text = b"".join(lm.vocab.pieces[t] for t in decoded.tokens).decode("utf-8", errors="replace")
    seq.text = prompt + text
    seq.pending = decoded.tokens[len(decoded.tokens) - decoded.unevaluated :] if decoded.unevaluated else []
    seq.turns.append(tuple(decoded.tokens))
    seq.dirty = False
    return Generation(
        text=text,
        tokens=decoded.tokens,
        choices=decoded.choices,
        prompt_tokens=prompt_tokens,
        cached_tokens=cached,
        completion_tokens=len(decoded.tokens),
        failure=decoded.failure,
    )


def new_tokens(lm: LoadedModel, prompt: str, known: str) -> list[int]:
    """The tokens of ``prompt`` past the text the sequence already holds (all of it, BOS included, if none)."""
    return lm.vocab.tokenize(prompt[len(known) :], special=True) if known else lm.vocab.prompt_tokens(prompt)


def rotations_of(
    lm: LoadedModel, messages: list[Message], known: str, pending: list[int], to_eval: list[int], cached: int
) -> Rotations | None:
    """The prompt's tail as shown and in the other rotations of its options (the last user turn's variants),
    from the first token where any of them differs; None when the turn shows one order only."""
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last is None or not messages[last].variants:
        return None
    variants = []
    for text in messages[last].variants:
        swapped = [*messages[:last], messages[last].model_copy(update={"content": text, "variants": None}), *messages[last + 1 :]]
        variants.append(pending + new_tokens(lm, lm.fmt.render(swapped), known))
    split = min(common_prefix([to_eval, v]) for v in variants)
    if split == 0:  # the opening evaluation is never empty
        return None
    return Rotations(base=cached + split, tail=to_eval[split:], variants=[v[split:] for v in variants])


def rebuild(lm: LoadedModel, ctx: Context, conversations: list[list[Message]], group: list[GenerationRequest]) -> bool:
    """Make every sequence hold exactly the earlier turns of its conversation. If any does not, all are
    cleared and the earlier rounds evaluated again, round by round, in the same lockstep as first time."""
    earlier = [[(i, m) for i, m in enumerate(msgs) if m.role == "assistant"] for msgs in conversations]
    if all(
        not seq.dirty and seq.text and seq.turns == [tuple(m.tokens or ()) for _, m in turns][: len(seq.turns)]
        and len(seq.turns) == len(turns) and lm.fmt.render(msgs).startswith(seq.text)
        for seq, turns, msgs in zip(ctx.seqs, earlier, conversations)
    ) or not any(earlier):
        return False
    for seq in ctx.seqs:
        seq.reset()
    for k in range(max(len(turns) for turns in earlier)):
        steps = []
        for seq, turns, msgs, r in zip(ctx.seqs, earlier, conversations, group):
            if k >= len(turns):
                continue
            i, m = turns[k]
            if m.tokens is None or m.schema_ is None:
                raise ReplayMismatch("an earlier answer has no recorded tokens to rebuild the state from")
            past = r.model_copy(update={"messages": msgs[:i], "schema_": m.schema_})
            steps.append((seq, turn(lm, seq, msgs[:i], past, forced=list(m.tokens), on_token=None)))
        lockstep(ctx, steps, lambda j, g: None)
    return True


def copy_guard(vocab, request: GenerationRequest) -> Guard | None:
    """The request's copy guard, if it has one (see copyguard.py)."""
    if not (request.avoid and request.copy_guard):
        return None
    if request.copy_guard_by == "tokens":
        return TokenGuard(vocab, request.avoid, request.copy_guard)
    return WordGuard(request.avoid, request.copy_guard, request.quotable)
