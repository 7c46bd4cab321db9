"""Constrained decoding on llama.cpp: a ballot plan (see grammar.py) turned into tokens.

How it stays fast and exact:
- Fixed text is tokenized and evaluated in one batch, never sampled.
- A choice (the vote, who persuaded whom) is decided by scoring every complete alternative: the model's own
  log-probability of each alternative's tokens, so options that share a prefix are told apart. The vote is
  the most probable alternative (the model's view; or, with ``Sampling.draw_choices``, drawn from those
  probabilities at the participant's temperature), and they are kept as its confidence.
- Free text samples first and checks the one sampled token; only when it is rejected is the whole vocabulary
  masked and the token sampled again (llama.cpp's own sampler does the same for grammars).

The decoder is a coroutine (``decode_steps``): it yields each evaluation it needs, ``(tokens, all_logits)``,
and reads the logits once it is resumed. ``decode_plan`` runs it alone on one context; the llama.cpp
backend runs several in lockstep, one sequence each, so that participants sharing a model share each
``llama_decode``. The decoder cannot tell the two apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from localpanel.engine.copyguard import MAX_REJECTIONS, Guard
from localpanel.engine.draw import average, choose
from localpanel.engine.freetext import (
    LOOP_WINDOW,
    MAX_REDRAWS,
    FreeText,
    IntegerText,
    degenerate,
    looping_class,
)
from localpanel.engine.grammar import Choice, Integer, Literal, Plan, Text
from localpanel.engine.runtime import ChoiceRecord, Sampling
from localpanel.engine.sampler import Greedy, Sampler, log_softmax  # noqa: F401  (Sampler re-exported)
from localpanel.engine.vocab import Vocab
from localpanel.errors import RunError, UndecodableError


class ReplayMismatch(RunError):
    """Recorded tokens do not fit the plan: the run was made with another model, build or localpanel."""

    def __init__(self, detail: str):
        super().__init__(
            f"The recorded turns cannot be decoded again here ({detail}): the run was made with other weights, "
            "another llama.cpp build or another localpanel; replay it where it was made."
        )


class Evaluator(Protocol):
    """What the decoder needs from a sequence: evaluate tokens, read the logits of the last evaluation, roll back.

    The coroutine asks for evaluations by yielding them; ``eval`` is used only by ``drive``."""

    n_past: int

    def eval(self, tokens: list[int], all_logits: bool = False) -> None: ...
    def logits(self, i: int = -1) -> np.ndarray: ...
    def rollback(self, n_past: int) -> None: ...


# What a decoding coroutine yields: tokens to evaluate, and which rows' logits it wants: True every token's,
# False the last one's, an int i those of the tokens from index i on.
Step = tuple[list[int], "bool | int"]


def wants_logits(which: "bool | int", i: int, n: int) -> bool:
    """Whether the ``i``-th of ``n`` evaluated tokens must output logits (see ``Step``)."""
    if which is True:
        return True
    if which is False:
        return i == n - 1
    return i >= which


def drive(steps, ev: Evaluator):
    """Run a decoding coroutine alone: each evaluation it yields is done on ``ev`` at once. Returns its result."""
    try:
        step = next(steps)
        while True:
            ev.eval(*step)
            step = steps.send(None)
    except StopIteration as done:
        return done.value


@dataclass
class Decoded:
    tokens: list[int]
    choices: dict[str, ChoiceRecord]
    values: dict[str, object]
    failure: str | None = None
    unevaluated: int = 0
    sampled: int = 0  # tokens drawn by the sampler (the rest were fixed text or chosen alternatives)


@dataclass
class _State:
    tokens: list[int] = field(default_factory=list)  # the ballot so far
    sampled: int = 0
    unevaluated: list[int] = field(default_factory=list)  # its tail, not yet in the KV cache
    pending: str = ""  # fixed text not yet tokenized
    skip_literal: bool = False


def decode_plan(
    ev: Evaluator,
    vocab: Vocab,
    plan: Plan,
    sampling: Sampling,
    seed: int,
    max_tokens: int,
    forced: list[int] | None = None,
    on_token: Callable[[int], None] | None = None,
    rotations: Rotations | None = None,
    guard: Guard | None = None,
) -> Decoded:
    """Decode one ballot on ``ev`` alone (see ``decode_steps``)."""
    return drive(decode_steps(ev, vocab, plan, sampling, seed, max_tokens, forced, on_token, rotations, guard), ev)


def decode_steps(
    ev: Evaluator,
    vocab: Vocab,
    plan: Plan,
    sampling: Sampling,
    seed: int,
    max_tokens: int,
    forced: list[int] | None = None,
    on_token: Callable[[int], None] | None = None,
    rotations: Rotations | None = None,
    guard: Guard | None = None,
):
    """Decode one ballot, yielding every evaluation it needs. With ``forced`` (recorded tokens) nothing is
    sampled, but every evaluation happens exactly as when those tokens were first generated, which restores
    the same KV state bit for bit. Recorded tokens that stop inside free text are a turn that failed there.

    With ``rotations`` the prompt's tail is not yet evaluated: it is evaluated with the ballot's first tokens,
    or, at the vote, after the tails of the other rotations (see ``Rotations``)."""
    job = _Job(ev, vocab, sampling, seed, max_tokens, forced, on_token, rotations, guard,
               st=_State(unevaluated=list(rotations.tail) if rotations else []),
               sampler=Sampler(vocab.n, sampling, seed) if forced is None else None)
    st, values, choices = job.st, job.values, job.choices
    try:
        for i, seg in enumerate(plan.segments):
            if isinstance(seg, Literal):
                if st.skip_literal:
                    st.skip_literal = False
                else:
                    st.pending += seg.text
            elif isinstance(seg, Choice):
                yield from _choose(job, seg, plan.literal_after(i))
            else:
                failure = yield from _free_text(job, seg, plan.literal_after(i))
                if failure:
                    return Decoded(st.tokens, choices, values, failure, len(st.unevaluated), st.sampled)
        if st.pending:
            job.take_forced(vocab.tokenize(st.pending))
        return Decoded(st.tokens, choices, values, None, len(st.unevaluated), st.sampled)
    finally:
        if job.sampler:
            job.sampler.close()


@dataclass
class _Job:
    """One ballot being decoded: what it is decoded on and under, and what it has so far (its state, the values
    and choices made). ``_choose`` and ``_free_text`` each take it whole."""

    ev: Evaluator
    vocab: Vocab
    sampling: Sampling
    seed: int
    max_tokens: int
    forced: list[int] | None
    on_token: Callable[[int], None] | None
    rotations: "Rotations | None"
    guard: Guard | None
    st: _State
    sampler: Sampler | None
    values: dict[str, object] = field(default_factory=dict)
    choices: dict[str, ChoiceRecord] = field(default_factory=dict)

    def take_forced(self, seq: list[int]) -> None:
        """Append tokens the plan fixes (checked against the recorded ones when replaying), to be evaluated."""
        st, pos = self.st, len(self.st.tokens)
        if self.forced is not None and self.forced[pos : pos + len(seq)] != seq:
            raise ReplayMismatch(f"recorded tokens differ from the plan at ballot token {pos}")
        st.tokens.extend(seq)
        st.unevaluated.extend(seq)
        if self.on_token:
            self.on_token(len(st.tokens))

    def flush(self):
        """Evaluate what is pending and return the logits for the next token."""
        st = self.st
        if st.pending:
            self.take_forced(self.vocab.tokenize(st.pending))
            st.pending = ""
        if st.unevaluated:
            yield st.unevaluated, False
            st.unevaluated = []
        return self.ev.logits()

    def drawer(self, seg: Text | Integer):
        """What draws this segment's tokens: the sampler, or greedily for an integer vote unless votes are drawn."""
        if self.sampler and isinstance(seg, Integer) and self.sampling.greedy_integers:
            return Greedy(self.sampler)
        return self.sampler


@dataclass
class Rotations:
    """The prompt's tail (from ``base``, where the rotations of the options first differ) as shown, and as it
    reads with the options in each other rotation: the vote is scored after each and the probabilities averaged.
    The shown tail is left unevaluated by the turn, so that it is evaluated once, after the others."""

    base: int
    tail: list[int]
    variants: list[list[int]]
    field: str = "vote"


def _score(ev, spans: list[list[int]], common: int):
    """The log-probability of each alternative's tokens after what is evaluated now (rolled back after)."""
    base = ev.n_past
    first = log_softmax(ev.logits())
    logp = np.empty(len(spans))
    for k, span in enumerate(spans):
        tail = span[common:]
        lp = first[tail[0]]
        if len(tail) > 1:
            yield tail[:-1], True
            for j in range(1, len(tail)):
                lp += log_softmax(ev.logits(j - 1))[tail[j]]
            ev.rollback(base)
        logp[k] = lp
    return logp


def _evaluate_and_score(ev, prefix: list[int], spans: list[list[int]], common: int):
    """Evaluate ``prefix``, then score each alternative after it, in as few evaluations as it takes: the
    longest alternative rides along with the prefix (logits from the prefix's last token on), each other one
    of several tokens takes one more. The state ends right after the prefix."""
    if not prefix:
        return (yield from _score(ev, spans, common))
    tails = [span[common:] for span in spans]
    ride = max(range(len(tails)), key=lambda k: (len(tails[k]), -k))  # the first of the longest
    extra = tails[ride][:-1]
    yield prefix + extra, len(prefix) - 1
    base = ev.n_past - len(extra)
    first = log_softmax(ev.logits(0))
    logp = np.array([first[tail[0]] for tail in tails])
    for j in range(1, len(tails[ride])):
        logp[ride] += log_softmax(ev.logits(j))[tails[ride][j]]
    for k, tail in enumerate(tails):
        if k != ride and len(tail) > 1:
            ev.rollback(base)
            yield tail[:-1], True
            for j in range(1, len(tail)):
                logp[k] += log_softmax(ev.logits(j - 1))[tail[j]]
    ev.rollback(base)
    return logp


def _probabilities(logp: np.ndarray) -> np.ndarray:
    probs = np.exp(logp - logp.max())
    return probs / probs.sum()


def _choose(job: _Job, seg: Choice, after: str):
    """Choose among a segment's alternatives by the model's probability of each whole one (averaged over the
    rotations of the options, for the vote), drawn or the most probable as the sampling says."""
    ev, vocab, st, values, choices = job.ev, job.vocab, job.st, job.values, job.choices
    sampling, seed, forced, take_forced, rotations = job.sampling, job.seed, job.forced, job.take_forced, job.rotations
    alternatives = list(range(len(seg.values)))
    if seg.null_when and values.get(seg.null_when[0]) == seg.null_when[1]:
        alternatives = [seg.values.index(None)]
    texts = [seg.texts[a] for a in alternatives]
    prefix = st.pending
    seqs = [vocab.tokenize(prefix + text + after) for text in texts]
    st.pending, st.skip_literal = "", True
    if len(alternatives) == 1:
        take_forced(seqs[0])
        values[seg.field] = seg.values[alternatives[0]]
        choices[seg.field] = ChoiceRecord(values=[seg.values[alternatives[0]]], probabilities=[1.0], chosen=0)
        return
    # Score each alternative through the token that holds the first byte after it, so that no alternative's
    # tokens are a prefix of another's ("3" against "31").
    spans = [_span(vocab.pieces, seq, len((prefix + text).encode()) + 1) for seq, text in zip(seqs, texts)]
    common = common_prefix(spans)
    if any(len(span) == common for span in spans):
        raise UndecodableError(
            f"two values of {seg.field} ({', '.join(texts)}) read as the same tokens to this model; make the options differ more."
        )
    take_forced(spans[0][:common])
    raw = None
    if rotations is not None and rotations.field == seg.field:
        # Every other rotation first, from where they part; the order shown last, so that its state stays.
        ballot = list(st.tokens)
        rows = []
        for variant in rotations.variants:
            ev.rollback(rotations.base)
            rows.append(_probabilities((yield from _evaluate_and_score(ev, variant + ballot, spans, common))))
        ev.rollback(rotations.base)
        st.unevaluated = []
        shown = _probabilities((yield from _evaluate_and_score(ev, rotations.tail + ballot, spans, common)))
        raw = [float(p) for p in shown]
        probs = np.asarray(average([shown, *rows]))
    else:
        pending, st.unevaluated = st.unevaluated, []
        probs = _probabilities((yield from _evaluate_and_score(ev, pending, spans, common)))
    if forced is not None:
        pos = len(st.tokens)
        matches = [k for k, seq in enumerate(seqs) if forced[pos : pos + len(seq) - common] == seq[common:]]
        if not matches:
            raise ReplayMismatch(f"recorded tokens match none of the alternatives of {seg.field}")
        chosen = matches[0]
    else:
        chosen = choose([seg.values[a] for a in alternatives], probs, sampling.temperature, seed, seg.field,
                        draw=sampling.draw_choices)
    take_forced(seqs[chosen][common:])
    values[seg.field] = seg.values[alternatives[chosen]]
    choices[seg.field] = ChoiceRecord(
        values=[seg.values[a] for a in alternatives], probabilities=[float(p) for p in probs], chosen=chosen, raw=raw
    )


def _span(pieces: list[bytes], seq: list[int], cut: int) -> list[int]:
    """The shortest head of ``seq`` whose bytes reach ``cut``."""
    n = 0
    for k, tok in enumerate(seq):
        n += len(pieces[tok])
        if n >= cut:
            return seq[: k + 1]
    return seq


def common_prefix(seqs: list[list[int]]) -> int:
    n = 0
    for column in zip(*seqs):
        if any(t != column[0] for t in column):
            break
        n += 1
    return n


def written(vocab: Vocab, tok: int, verdict) -> bytes:
    """What ``tok`` adds to the free text: its piece, or the part before the closing quote."""
    piece = vocab.pieces[tok]
    return piece[: verdict[1]] if verdict[0] == "close" else piece


def _free_text(job: _Job, seg: Text | Integer, after: str):
    """Sample free text (until it ends at a sentence end) or an integer; returns a failure reason or None."""
    vocab, st, values, max_tokens, forced, flush, on_token = (job.vocab, job.st, job.values, job.max_tokens, job.forced,
                                                              job.flush, job.on_token)
    sampler, guard = job.drawer(seg), job.guard if isinstance(seg, Text) else None
    text = FreeText(vocab, seg, after) if isinstance(seg, Text) else IntegerText(vocab, seg, after)
    own: list[int] = []  # this text's tokens, for the copy guard
    while True:
        # Evaluate first, then decide: every way a turn can fail here leaves the same evaluations behind, so
        # a failed turn's recorded tokens rebuild its state as exactly as a finished turn's do.
        logits = yield from flush()
        if len(st.tokens) >= max_tokens:
            values[seg.field] = text.value
            return f"cut off at {max_tokens} tokens (--max-tokens) before the {seg.field} ended"
        if forced is not None:
            if len(st.tokens) >= len(forced):
                values[seg.field] = text.value
                return f"the recorded turn stopped inside the {seg.field}"
            tok = forced[len(st.tokens)]
            verdict = text.accepts(tok)
            if verdict is None:
                raise ReplayMismatch(f"recorded token {tok} is not allowed at this point of the {seg.field}")
        else:
            if bias := text.ending_bias():
                logits[text.enders()] += bias
            if guard is not None and (banned := guard.banned(own)):
                kept = logits[banned].copy()
                logits[banned] = -np.inf
                if not (np.isfinite(logits) & text.allowed()).any():  # nothing left the grammar allows: let it be
                    logits[banned] = kept
            tok = sampler.sample(logits)
            verdict = text.accepts(tok)
            if verdict is None:
                allowed = text.allowed()
                if not allowed.any():
                    values[seg.field] = text.value
                    return text.failure()
                logits[~allowed] = -np.inf
                tok = sampler.sample(logits)
                verdict = text.accepts(tok)
                if verdict is None:  # allowed() admits only tokens accepts() admits: a bug if reached
                    raise AssertionError(f"token {tok} passed the {seg.field} mask but not its check")
            tries = rejected = 0
            while True:
                if isinstance(text, FreeText) and degenerate(bytes(text.body[-LOOP_WINDOW:]) + vocab.pieces[tok]):
                    # A loop or a run: every token that starts like that one (any digit, for a digit) is taken out
                    # and the draw made again, so that a model set on a run of digits must write something else.
                    tries += 1
                    logits[looping_class(vocab, tok)] = -np.inf
                    logits[~text.allowed()] = -np.inf
                    if tries > MAX_REDRAWS or not np.isfinite(logits).any():
                        values[seg.field] = text.value
                        return f"the {seg.field} kept repeating itself (degenerate text)"
                elif (guard is not None and rejected < MAX_REJECTIONS
                      and guard.rejects(bytes(text.body), written(vocab, tok, verdict))):
                    # The copy guard: this token would write a run copied from what the seat has read.
                    rejected += 1
                    kept = logits[tok]
                    logits[tok] = -np.inf
                    logits[~text.allowed()] = -np.inf
                    if not np.isfinite(logits).any():  # nothing else the grammar allows: the draw stands
                        logits[tok] = kept
                        break
                else:
                    break
                tok = sampler.sample(logits)
                verdict = text.accepts(tok)
                if verdict is None:  # allowed() admits only tokens accepts() admits: a bug if reached
                    raise AssertionError(f"token {tok} passed the {seg.field} mask but not its check")
            sampler.accept(tok)
        st.sampled += 1
        own.append(tok)
        st.tokens.append(tok)
        st.unevaluated.append(tok)
        if on_token:
            on_token(len(st.tokens))
        text.take(tok, verdict)
        if verdict[0] == "close":
            piece = vocab.pieces[tok]
            st.pending = text.after[len(piece) - verdict[1] :].decode("utf-8")
            st.skip_literal = True
            values[seg.field] = text.value
            return None
        if text.complete:
            st.pending = after
            st.skip_literal = True
            values[seg.field] = text.value
            return None
