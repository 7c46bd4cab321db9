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
    held = seq.held
    if held is not None and not seq.dirty and lm.vocab.prompt_tokens(prompt)[: len(held)] == held:
        def rest(text: str) -> list[int]:  # the prompt past the opening copied in (see share)
            return lm.vocab.prompt_tokens(text)[len(held):]
    else:
        known = seq.text if seq.text and held is None and prompt.startswith(seq.text) and not seq.dirty else ""
        if not known:
            seq.reset()

        def rest(text: str) -> list[int]:
            return new_tokens(lm, text, known)
    cached = seq.n_past
    to_eval = seq.pending + rest(prompt)
    prompt_tokens = cached + len(to_eval)
    rotations = rotations_of(messages, rest, seq.pending, to_eval, cached, lm.fmt.render)
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
    seq.text, seq.held = prompt + text, None
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


def variant_conversations(messages: list[Message]) -> list[list[Message]]:
    """The conversation with its last user turn shown in each other rotation of the options (its variants)."""
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last is None or not messages[last].variants:
        return []
    return [[*messages[:last], messages[last].model_copy(update={"content": text, "variants": None}), *messages[last + 1 :]]
            for text in messages[last].variants]


def rotations_of(
    messages: list[Message], rest, pending: list[int], to_eval: list[int], cached: int, render
) -> Rotations | None:
    """The prompt's tail as shown and in the other rotations of its options (the last user turn's variants),
    from the first token where any of them differs; None when the turn shows one order only. ``rest(text)``: the
    tokens of a rendered prompt past what the sequence holds."""
    variants = [pending + rest(render(swapped)) for swapped in variant_conversations(messages)]
    if not variants:
        return None
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


# A common opening shorter than this is evaluated by each sequence itself: copying a KV stream is not free.
MIN_SHARED = 32
# Prompts that may share their opening are evaluated in pieces ending at multiples of this many positions, and an
# opening is shared up to such a multiple: a seat's prompt is then computed alike, to the last bit, whether its
# opening was evaluated by itself or copied in (see Context.step).
ALIGN = 32


def share(lm: LoadedModel, ctx: Context, conversations: list[list[Message]], group: list[GenerationRequest]) -> int:
    """Give every sequence of a group the common opening of its prompts, evaluated once on the context's last
    sequence (the opening's own, kept from round to round) and copied to the others; returns how many of its
    tokens had to be evaluated now (0: nothing shared). Only for groups whose requests all ask for it and are fresh
    prompts (no earlier answers to keep); the opening ends where a prompt first differs from another or from a
    rotation of its own options, at a multiple of ALIGN. The opening sequence keeps what it held up to where it
    agrees with the new opening (at a multiple of ALIGN too) and evaluates the rest, in the aligned pieces every
    prompt of such a group is evaluated in: a seat's ballot is the one its whole prompt gives, whether the opening
    was extended, evaluated afresh (a resumed run) or not shared at all."""
    aligned = all(r.share_prefix for r in group)
    for seq in ctx.seqs:
        seq.align = ALIGN if aligned else None
    if not aligned or len(ctx.seqs) <= len(group) or any(m.role == "assistant" for msgs in conversations for m in msgs):
        return 0
    prompts = [lm.vocab.prompt_tokens(lm.fmt.render(msgs)) for msgs in conversations]
    prompts += [lm.vocab.prompt_tokens(lm.fmt.render(v)) for msgs in conversations for v in variant_conversations(msgs)]
    n = min(common_prefix(prompts), min(len(p) for p in prompts) - 1)  # each evaluates a token of its own at least
    n -= n % ALIGN
    if n < MIN_SHARED:
        return 0
    opening = ctx.seqs[-1]
    kept = common_prefix([opening.held or [], prompts[0][:n]]) if not opening.dirty else 0
    kept -= kept % ALIGN
    if kept:
        opening.rollback(kept)
    else:
        opening.reset()
    if kept < n:
        opening.dirty = True
        try:
            opening.eval(prompts[0][kept:n])
        except ContextFull:  # each turn meets it again on its own and records the failure
            opening.reset()
            return 0
    opening.held, opening.dirty = prompts[0][:n], False
    for seq in ctx.seqs[: len(group)]:
        seq.copy_from(opening)
    return n - kept


def copy_guard(vocab, request: GenerationRequest) -> Guard | None:
    """The request's copy guard, if it has one (see copyguard.py)."""
    if not (request.avoid and request.copy_guard):
        return None
    if request.copy_guard_by == "tokens":
        return TokenGuard(vocab, request.avoid, request.copy_guard)
    return WordGuard(request.avoid, request.copy_guard, request.quotable)
