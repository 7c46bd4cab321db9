"""Constrained decoding on llama.cpp: a ballot plan (see grammar.py) turned into tokens.

How it stays fast and exact:
- Fixed text is tokenized and evaluated in one batch, never sampled.
- A choice (the vote, who persuaded whom) is decided by scoring every complete alternative: the model's own
  log-probability of each alternative's tokens, so options that share a prefix are told apart. The vote is
  drawn from those probabilities at the participant's temperature, and they are kept as its confidence.
- Free text samples first and checks the one sampled token; only when it is rejected is the whole vocabulary
  masked and the token sampled again (llama.cpp's own sampler does the same for grammars).
"""

from __future__ import annotations

import codecs
import ctypes
import math
import re
from dataclasses import dataclass, field
from typing import Callable, Protocol

import llama_cpp as L
import numpy as np

from .grammar import Choice, Literal, Plan, Text
from .runtime import ChoiceRecord, Sampling

_FORBIDDEN = frozenset(b'"\\\x7f') | frozenset(range(0x20))
_SENTENCE_END = (".", "!", "?")
_ATTR_OK = L.LLAMA_TOKEN_ATTR_NORMAL | L.LLAMA_TOKEN_ATTR_BYTE
_ATTR_BAD = L.LLAMA_TOKEN_ATTR_CONTROL | L.LLAMA_TOKEN_ATTR_UNKNOWN | L.LLAMA_TOKEN_ATTR_UNUSED


class ReplayMismatch(RuntimeError):
    """Recorded tokens do not fit the plan: the run was made with another model, build or localpanel."""


class Vocab:
    """One model's vocabulary: tokenizing, the bytes of every token, and the masks free text needs."""

    def __init__(self, vocab_ptr):
        self.ptr = vocab_ptr
        self.n = L.llama_vocab_n_tokens(vocab_ptr)
        self.add_bos = bool(L.llama_vocab_get_add_bos(vocab_ptr))
        self.bos_text = self._text(L.llama_vocab_bos(vocab_ptr))
        self.eos_text = self._text(L.llama_vocab_eos(vocab_ptr))
        self._tables: tuple | None = None
        self._closing: dict[bytes, np.ndarray] = {}
        self._special_re: re.Pattern | None = None
        self._char_lengths: np.ndarray | None = None

    def adopt(self, other: "Vocab") -> None:
        """Take over the tables another handle on the same vocabulary already built."""
        self._tables, self._char_lengths = other._tables, other._char_lengths
        self._closing, self._special_re = other._closing, other._special_re

    def _text(self, token: int) -> str:
        if token < 0:
            return ""
        raw = L.llama_vocab_get_text(self.ptr, token)
        return raw.decode("utf-8", errors="replace") if raw else ""

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        data = text.encode("utf-8")
        buf = (L.llama_token * (len(data) + 8))()
        n = L.llama_tokenize(self.ptr, data, len(data), buf, len(buf), add_bos, special)
        if n < 0:
            buf = (L.llama_token * (-n))()
            n = L.llama_tokenize(self.ptr, data, len(data), buf, len(buf), add_bos, special)
        return list(buf[:n])

    def prompt_tokens(self, text: str) -> list[int]:
        """Tokens for a whole rendered prompt: special tokens parsed, BOS added unless the template wrote it."""
        add_bos = self.add_bos and not (self.bos_text and text.startswith(self.bos_text))
        return self.tokenize(text, add_bos=add_bos, special=True)

    def neutralize(self, text: str) -> str:
        """Break up control-token texts in untrusted content so they stay plain text (e.g. '<|im_end|>')."""
        if self._special_re is None:
            texts = {self._text(t) for t in range(self.n) if L.llama_vocab_get_attr(self.ptr, t) & L.LLAMA_TOKEN_ATTR_CONTROL}
            texts = sorted((t for t in texts if len(t) > 1), key=len, reverse=True)
            self._special_re = re.compile("|".join(map(re.escape, texts))) if texts else re.compile(r"(?!)")
        return self._special_re.sub(lambda m: m.group(0)[0] + "\u200b" + m.group(0)[1:], text)

    # -- token tables, built on first use ---------------------------------------------------------------

    @property
    def tables(self) -> tuple[list[bytes], np.ndarray, np.ndarray, np.ndarray]:
        """(pieces, body_ok, leading continuation bytes, whole token is continuation bytes)."""
        if self._tables is None:
            self._tables = self._build_tables()
        return self._tables

    def _build_tables(self) -> tuple[list[bytes], np.ndarray, np.ndarray, np.ndarray]:
        buf = ctypes.create_string_buffer(256)
        pieces: list[bytes] = []
        for t in range(self.n):
            k = L.llama_token_to_piece(self.ptr, t, buf, 256, 0, False)
            pieces.append(buf.raw[:k] if k > 0 else b"")
        attrs = np.array([L.llama_vocab_get_attr(self.ptr, t) for t in range(self.n)], dtype=np.int64)
        lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=self.n)
        blob = np.frombuffer(b"".join(pieces), dtype=np.uint8)
        owner = np.repeat(np.arange(self.n), lengths)  # token of each byte
        forbidden = np.zeros(self.n, dtype=bool)
        bad = (blob < 0x20) | (blob == 0x22) | (blob == 0x5C) | (blob == 0x7F)
        forbidden[owner[bad]] = True
        cont = (blob & 0xC0) == 0x80
        self._char_lengths = lengths - np.bincount(owner[cont], minlength=self.n)
        high = np.zeros(self.n, dtype=bool)
        high[owner[blob >= 0x80]] = True
        body_ok = (lengths > 0) & ((attrs & _ATTR_OK) != 0) & ((attrs & _ATTR_BAD) == 0) & ~forbidden
        lead = np.zeros(self.n, dtype=np.int8)
        all_cont = np.zeros(self.n, dtype=bool)
        for t in np.flatnonzero(body_ok & high):  # only tokens with non-ASCII bytes need a UTF-8 check
            piece = pieces[t]
            c = 0
            while c < len(piece) and piece[c] & 0xC0 == 0x80:
                c += 1
            try:
                codecs.utf_8_decode(piece[c:], "strict", False)
            except UnicodeDecodeError:
                body_ok[t] = False
                continue
            lead[t], all_cont[t] = min(c, 3), c == len(piece)
        return pieces, body_ok, lead, all_cont

    @property
    def pieces(self) -> list[bytes]:
        return self.tables[0]

    @property
    def char_lengths(self) -> np.ndarray:
        self.tables  # built together
        return self._char_lengths

    def body_mask(self, need: int) -> np.ndarray:
        """Tokens that may continue free text when ``need`` UTF-8 continuation bytes are owed."""
        _, body_ok, lead, all_cont = self.tables
        if need == 0:
            return body_ok & (lead == 0)
        return body_ok & ((lead == need) | (all_cont & (lead <= need)))

    def closing_mask(self, literal: bytes) -> np.ndarray:
        """Tokens that end free text: text, then the closing quote, then a prefix of the literal after it."""
        mask = self._closing.get(literal)
        if mask is None:
            mask = np.zeros(self.n, dtype=bool)
            for t, piece in enumerate(self.pieces):
                j = piece.find(b'"')
                if j >= 0 and closes(piece, j, literal):
                    mask[t] = True
            self._closing[literal] = mask
        return mask


def utf8_advance(need: int, data: bytes) -> int:
    """UTF-8 continuation bytes still owed after ``data`` (``need`` owed before it), or -1 if invalid."""
    for b in data:
        if need:
            if b & 0xC0 != 0x80:
                return -1
            need -= 1
        elif b < 0x80:
            continue
        elif 0xC2 <= b <= 0xDF:
            need = 1
        elif 0xE0 <= b <= 0xEF:
            need = 2
        elif 0xF0 <= b <= 0xF4:
            need = 3
        else:
            return -1
    return need


def closes(piece: bytes, j: int, literal: bytes) -> bool:
    body, tail = piece[:j], piece[j:]
    return not _FORBIDDEN.intersection(body) and utf8_advance(0, body) == 0 and literal.startswith(tail)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max()
    return x - m - math.log(np.exp(x - m).sum())


class Sampler:
    """A llama.cpp sampler chain (penalties, top-k, top-p, min-p, temperature, seeded draw) over a logits row."""

    def __init__(self, n_vocab: int, sampling: Sampling, seed: int):
        self.chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if sampling.repeat_penalty > 1.0:
            L.llama_sampler_chain_add(self.chain, L.llama_sampler_init_penalties(n_vocab, 64, sampling.repeat_penalty, 0.0, 0.0))
        if sampling.temperature <= 0.0:
            L.llama_sampler_chain_add(self.chain, L.llama_sampler_init_greedy())
        else:
            if sampling.top_k > 0:
                L.llama_sampler_chain_add(self.chain, L.llama_sampler_init_top_k(sampling.top_k))
            L.llama_sampler_chain_add(self.chain, L.llama_sampler_init_top_p(sampling.top_p, 1))
            if sampling.min_p > 0:
                L.llama_sampler_chain_add(self.chain, L.llama_sampler_init_min_p(sampling.min_p, 1))
            L.llama_sampler_chain_add(self.chain, L.llama_sampler_init_temp(sampling.temperature))
            L.llama_sampler_chain_add(self.chain, L.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        self.ids = np.arange(n_vocab, dtype=np.int32)
        self.data = np.zeros(n_vocab, dtype=np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)]))
        self.array = L.llama_token_data_array(
            data=self.data.ctypes.data_as(L.llama_token_data_p), size=n_vocab, selected=-1, sorted=False
        )

    def sample(self, logits: np.ndarray) -> int:
        self.data["id"] = self.ids
        self.data["logit"] = logits
        self.array.size, self.array.selected, self.array.sorted = len(self.ids), -1, False
        L.llama_sampler_apply(self.chain, ctypes.byref(self.array))
        return int(self.data["id"][self.array.selected])

    def accept(self, token: int) -> None:
        L.llama_sampler_accept(self.chain, token)

    def close(self) -> None:
        if self.chain is not None:
            L.llama_sampler_free(self.chain)
            self.chain = None


class Evaluator(Protocol):
    """What the decoder needs from a context: evaluate tokens, read logits, roll back."""

    n_past: int

    def eval(self, tokens: list[int], all_logits: bool = False) -> None: ...
    def logits(self, i: int = -1) -> np.ndarray: ...
    def rollback(self, n_past: int) -> None: ...


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
) -> Decoded:
    """Decode one ballot. With ``forced`` (recorded tokens) nothing is sampled, but every evaluation happens
    exactly as when those tokens were first generated, which restores the same KV state bit for bit."""
    st = _State()
    values: dict[str, object] = {}
    choices: dict[str, ChoiceRecord] = {}
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 0x5EED])
    sampler = Sampler(vocab.n, sampling, seed) if forced is None else None

    def take_forced(seq: list[int]) -> None:
        pos = len(st.tokens)
        if forced is not None and forced[pos : pos + len(seq)] != seq:
            raise ReplayMismatch(f"recorded tokens differ from the plan at ballot token {pos}")
        st.tokens.extend(seq)
        st.unevaluated.extend(seq)
        if on_token:
            on_token(len(st.tokens))

    def flush() -> np.ndarray:
        """Evaluate what is pending and return the logits for the next token."""
        if st.pending:
            take_forced(vocab.tokenize(st.pending))
            st.pending = ""
        if st.unevaluated:
            ev.eval(st.unevaluated)
            st.unevaluated = []
        return ev.logits()

    try:
        for i, seg in enumerate(plan.segments):
            if isinstance(seg, Literal):
                if st.skip_literal:
                    st.skip_literal = False
                else:
                    st.pending += seg.text
            elif isinstance(seg, Choice):
                _choose(ev, vocab, seg, plan.literal_after(i), st, values, choices, sampling, rng, forced, take_forced)
            else:
                failure = _free_text(ev, vocab, seg, plan.literal_after(i), st, values, sampler, max_tokens, forced, flush, on_token)
                if failure:
                    return Decoded(st.tokens, choices, values, failure, len(st.unevaluated), st.sampled)
        if st.pending:
            take_forced(vocab.tokenize(st.pending))
        return Decoded(st.tokens, choices, values, None, len(st.unevaluated), st.sampled)
    finally:
        if sampler:
            sampler.close()


def _choose(ev, vocab, seg: Choice, after: str, st: _State, values, choices, sampling, rng, forced, take_forced) -> None:
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
    common = _common_prefix(spans)
    if any(len(span) == common for span in spans):
        raise ValueError(f"alternatives of {seg.field} cannot be told apart by their tokens")
    take_forced(spans[0][:common])
    if st.unevaluated:
        ev.eval(st.unevaluated)
        st.unevaluated = []
    base = ev.n_past
    first = log_softmax(ev.logits())
    logp = np.empty(len(spans))
    for k, span in enumerate(spans):
        tail = span[common:]
        lp = first[tail[0]]
        if len(tail) > 1:
            ev.eval(tail[:-1], all_logits=True)
            for j in range(1, len(tail)):
                lp += log_softmax(ev.logits(j - 1))[tail[j]]
            ev.rollback(base)
        logp[k] = lp
    probs = np.exp(logp - logp.max())
    probs /= probs.sum()
    if forced is not None:
        pos = len(st.tokens)
        matches = [k for k, seq in enumerate(seqs) if forced[pos : pos + len(seq) - common] == seq[common:]]
        if not matches:
            raise ReplayMismatch(f"recorded tokens match none of the alternatives of {seg.field}")
        pick = matches[0]
    elif sampling.temperature <= 0.0:
        pick = int(np.argmax(logp))
    else:
        weights = np.exp((logp - logp.max()) / sampling.temperature)
        pick = int(rng.choice(len(spans), p=weights / weights.sum()))
    take_forced(seqs[pick][common:])
    values[seg.field] = seg.values[alternatives[pick]]
    choices[seg.field] = ChoiceRecord(
        values=[seg.values[a] for a in alternatives], probabilities=[float(p) for p in probs], chosen=pick
    )


def _span(pieces: list[bytes], seq: list[int], cut: int) -> list[int]:
    """The shortest head of ``seq`` whose bytes reach ``cut``."""
    n = 0
    for k, tok in enumerate(seq):
        n += len(pieces[tok])
        if n >= cut:
            return seq[: k + 1]
    return seq


def _common_prefix(seqs: list[list[int]]) -> int:
    n = 0
    for column in zip(*seqs):
        if any(t != column[0] for t in column):
            break
        n += 1
    return n


def _chars(data: bytes) -> int:
    return sum(1 for b in data if b & 0xC0 != 0x80)


def _free_text(ev, vocab, seg: Text, after: str, st: _State, values, sampler, max_tokens, forced, flush, on_token):
    """Sample the inside of a string until the model closes it; returns a failure reason or None."""
    after_b = after.encode()
    pieces = vocab.pieces
    body = bytearray()
    need = chars = 0
    soft_limit = int(seg.max_chars * 0.6)

    def judge(tok: int):
        piece = pieces[tok]
        if vocab.tables[1][tok]:
            owed = utf8_advance(need, piece)
            c = _chars(piece)
            if owed >= 0 and chars + c <= seg.max_chars:
                return "body", owed, c
            return None
        j = piece.find(b'"')
        if j >= 0 and need == 0 and closes(piece, j, after_b):
            c = _chars(piece[:j])
            if seg.min_chars <= chars + c <= seg.max_chars:
                return "close", j, c
        return None

    while True:
        if len(st.tokens) >= max_tokens:
            values[seg.field] = body.decode("utf-8", errors="replace")
            return f"cut off at {max_tokens} tokens (--max-tokens) before the {seg.field} ended"
        logits = flush()
        if forced is not None:
            if len(st.tokens) >= len(forced):
                raise ReplayMismatch("recorded tokens end inside free text")
            tok = forced[len(st.tokens)]
            verdict = judge(tok)
            if verdict is None:
                raise ReplayMismatch(f"recorded token {tok} is not allowed at this point of the {seg.field}")
        else:
            tok = sampler.sample(logits)
            verdict = judge(tok)
            if verdict is None:
                allowed = vocab.body_mask(need) & (vocab.char_lengths <= seg.max_chars - chars)
                if need == 0 and chars >= seg.min_chars - 1:
                    allowed |= vocab.closing_mask(after_b)
                logits[~allowed] = -np.inf
                tok = sampler.sample(logits)
                verdict = judge(tok)
            if verdict is None:  # the mask admits only tokens the judge accepts, so this is a bug if reached
                values[seg.field] = body.decode("utf-8", errors="replace")
                return f"no token the grammar allows could continue the {seg.field}"
            sampler.accept(tok)
        kind, info, c = verdict
        st.sampled += 1
        st.tokens.append(tok)
        st.unevaluated.append(tok)
        if on_token:
            on_token(len(st.tokens))
        piece = pieces[tok]
        if kind == "close":
            body += piece[:info]
            st.pending = after_b[len(piece) - info :].decode("utf-8")
            st.skip_literal = True
            values[seg.field] = body.decode("utf-8")
            return None
        body += piece
        need, chars = info, chars + c
        at_sentence_end = chars >= soft_limit and body.rstrip().endswith(tuple(e.encode() for e in _SENTENCE_END))
        if need == 0 and chars >= seg.min_chars and (chars >= seg.max_chars or at_sentence_end):
            st.pending = after
            st.skip_literal = True
            values[seg.field] = body.decode("utf-8")
            return None
