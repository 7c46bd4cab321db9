"""What free text may be, token by token: the rules a rationale (a JSON string that ends at a sentence end)
and an integer answer apply to each candidate token, with the masks that are those same checks applied to the
whole vocabulary, and the guards against loops and runs. ``decoding`` samples under them."""

from __future__ import annotations

import re

import numpy as np

from localpanel.engine.grammar import Integer, Text
from localpanel.engine.scripts import foreign_tokens
from localpanel.engine.vocab import Vocab, char_count, utf8_advance


class _Rule:
    """What a free-form segment's rule shares: its text so far, and a mask that is its own check applied."""

    vocab: Vocab
    body: bytearray
    need = 0  # UTF-8 continuation bytes owed
    chars = 0

    def accepts(self, tok: int):
        raise NotImplementedError

    def admit(self, mask: np.ndarray, candidates) -> np.ndarray:
        """Add to ``mask`` every candidate token ``accepts`` admits: the mask can never disagree with the check."""
        for tok in candidates:
            if self.accepts(int(tok)) is not None:
                mask[tok] = True
        return mask

    def take(self, tok: int, verdict) -> None:
        kind, info, c = verdict
        piece = self.vocab.pieces[tok]
        self.body += piece[:info] if kind == "close" else piece
        if kind == "body":
            self.need = info
        self.chars += c


class FreeText(_Rule):
    """The rule for free text inside a JSON string, in one place: which token may come next, and when it ends.

    The text is built from body tokens (no quote, backslash or control character; valid UTF-8; within the
    length) and ends only at a sentence end: either the model writes the closing quote right after one, or,
    once the text is past ``soft_chars``, the decoder closes it at the first sentence end itself. ``accepts``
    judges one token and ``allowed`` masks the vocabulary with the same rule, so a token drawn under the
    mask is always accepted; the mask is empty only when the text reached its limit before a sentence ended.
    """

    def __init__(self, vocab: Vocab, seg: Text, after: str):
        self.vocab, self.seg = vocab, seg
        self.after = after.encode()
        self.soft_chars = max(seg.min_chars, seg.max_chars // 2)
        self.body = bytearray()
        self.foreign = (None if seg.scripts is None else
                        vocab.derived(("foreign", seg.scripts), lambda: foreign_tokens(vocab.pieces, seg.scripts)))

    def accepts(self, tok: int):
        """("body", owed, chars) or ("close", index of the quote, chars before it), or None if not allowed."""
        piece = self.vocab.pieces[tok]
        if self.foreign is not None and self.foreign[tok]:
            return None
        if self.vocab.body_ok_at(tok, self.need):
            c = int(self.vocab.char_lengths[tok])
            if self.chars + c <= self.seg.max_chars and (not self.seg.phrase or self._spaces_left() >= self._spaces()[tok]):
                return "body", utf8_advance(self.need, piece), c
            return None
        if self.need == 0 and self.vocab.closing_mask(self.after)[tok]:
            j = piece.find(b'"')
            c = char_count(piece[:j])
            if self.seg.min_chars <= self.chars + c <= self.seg.max_chars and self.ends(bytes(self.body) + piece[:j]):
                return "close", j, c
        return None

    def allowed(self) -> np.ndarray:
        """Every token ``accepts`` admits now, as a mask over the vocabulary."""
        mask = self.vocab.body_mask(self.need) & (self.vocab.char_lengths <= self.seg.max_chars - self.chars)
        if self.seg.phrase:
            mask &= self._spaces() <= self._spaces_left()
        if self.foreign is not None:
            mask &= ~self.foreign
        if self.need == 0 and self.chars + 1 >= self.seg.min_chars - max_closing_chars(self.vocab, self.after):
            self.admit(mask, np.flatnonzero(self.vocab.closing_mask(self.after)))
        return mask

    def _spaces(self) -> np.ndarray:
        """Each token's spaces: a phrase has at most PHRASE_WORDS words."""
        return self.vocab.derived("spaces", lambda: np.array([p.count(b" ") for p in self.vocab.pieces], dtype=np.int32))

    def _spaces_left(self) -> int:
        return PHRASE_WORDS - 1 - bytes(self.body).count(b" ")

    def ends(self, text: bytes) -> bool:
        """Whether the text may end here: at a sentence end, or for a phrase at a finished word."""
        return ends_phrase(text) if self.seg.phrase else ends_sentence(text)

    def enders(self) -> np.ndarray:
        """The tokens ``ending_bias`` favours: those that end a sentence, or for a phrase its closing quote."""
        return self.vocab.closing_mask(self.after) if self.seg.phrase else sentence_enders(self.vocab)

    @property
    def complete(self) -> bool:
        """Long enough and at a sentence end: the decoder closes the text here (a phrase only the model closes)."""
        body = bytes(self.body)
        return (
            not self.seg.phrase
            and self.need == 0
            and self.chars >= self.soft_chars
            and self.chars >= self.seg.min_chars
            and ends_sentence(body)
            and not may_continue_as_number(body)
        )

    def ending_bias(self) -> float:
        """A logit bonus for tokens that end a sentence, growing from 0 at ``soft_chars`` to ``ENDING_BIAS`` at
        the limit, so that a long sentence comes to an end (as transformers' exponential_decay_length_penalty
        does for end-of-sequence). Nothing is cut: past the limit the text still fails."""
        over = (self.chars - self.soft_chars) / max(1, self.seg.max_chars - self.soft_chars)
        return ENDING_BIAS * over * over if over > 0 else 0.0

    def failure(self) -> str:
        if self.chars >= self.seg.max_chars - 1:
            end = "its phrase ended" if self.seg.phrase else "a sentence ended"
            return f"the {self.seg.field} reached {self.seg.max_chars} characters before {end}"
        return f"no token the grammar allows could continue the {self.seg.field}"

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    value = text


class IntegerText(_Rule):
    """The rule for an integer: an optional minus, then digits with no leading zero, at most ``max_digits``.

    The model ends it by writing the start of what follows (e.g. ``,``); at ``max_digits`` the decoder ends it.
    As with FreeText, ``allowed`` is built from ``accepts``, so the two cannot disagree.
    """

    def __init__(self, vocab: Vocab, seg: Integer, after: str):
        self.vocab, self.seg = vocab, seg
        self.after = after.encode()
        self.body = bytearray()

    def _valid_prefix(self, text: bytes) -> bool:
        return _INT_PREFIX.fullmatch(text) is not None and len(text.lstrip(b"-")) <= self.seg.max_digits

    def accepts(self, tok: int):
        piece = self.vocab.pieces[tok]
        k = len(piece) - len(piece.lstrip(b"0123456789-"))
        head, tail = piece[:k], piece[k:]
        if not tail:
            return ("body", 0, 0) if piece and self._valid_prefix(bytes(self.body) + head) else None
        whole = bytes(self.body) + head
        if self.after.startswith(tail) and _INT_WHOLE.fullmatch(whole) and self._valid_prefix(whole):
            return "close", k, 0
        return None

    def allowed(self) -> np.ndarray:
        return self.admit(np.zeros(self.vocab.n, dtype=bool), integer_candidates(self.vocab, self.after))

    @property
    def complete(self) -> bool:
        return len(self.body.lstrip(b"-")) >= self.seg.max_digits

    def ending_bias(self) -> float:
        return 0.0

    def failure(self) -> str:
        return f"no token the grammar allows could continue the {self.seg.field}"

    @property
    def text(self) -> str:
        return self.body.decode()

    @property
    def value(self) -> int | None:
        return int(self.body) if _INT_WHOLE.fullmatch(bytes(self.body)) else None


_INT_PREFIX = re.compile(rb"(-?[1-9][0-9]*|0|-)?")
_INT_WHOLE = re.compile(rb"-?[1-9][0-9]*|0")


def integer_candidates(vocab: Vocab, after: bytes) -> np.ndarray:
    """Tokens that can appear in an integer: digits and minus signs, optionally followed by the start of ``after``."""

    def build() -> np.ndarray:
        out = []
        for t, piece in enumerate(vocab.pieces):
            tail = piece.lstrip(b"0123456789-")
            if piece and (not tail or after.startswith(tail)):
                out.append(t)
        return np.array(out, dtype=np.int64)

    return vocab.derived(("integer-candidates", after), build)


# Free text may not loop: a run of one character past MAX_RUN, of digits past MAX_DIGITS, or the same chunk of
# p characters three times over (more times for short chunks, so that "0.0." or "haha" are not caught), takes
# that token, and every token that starts like it, out of the draw.
MAX_RUN = 6
MAX_DIGITS = 15
LOOP_WINDOW = 180
MAX_REDRAWS = 8
_RUN = re.compile(rb"(.)\1{%d}\Z" % MAX_RUN, re.S)
_DIGITS = re.compile(rb"[0-9]{%d}\Z" % (MAX_DIGITS + 1))


def looping_class(vocab: Vocab, tok: int) -> np.ndarray:
    """The tokens that start as ``tok`` does: with the same first byte, or with any digit when it starts with one."""
    first = vocab.derived("first-bytes", lambda: np.array([p[0] if p else -1 for p in vocab.pieces], dtype=np.int16))
    b = int(first[tok])
    if 0x30 <= b <= 0x39:
        return (first >= 0x30) & (first <= 0x39)
    return first == b


def degenerate(text: bytes) -> bool:
    """Whether ``text`` now ends in a loop: a long run of one character or of digits, or a repeated chunk."""
    if _RUN.search(text) or _DIGITS.search(text):
        return True
    for p in range(2, min(60, len(text) // 3) + 1):
        reps = max(3, -(-16 // p))
        if p * reps > len(text):
            continue
        chunk = text[-p:]
        if text.endswith(chunk * reps) and chunk.strip():
            return True
    return False


ENDING_BIAS = 10.0
# A sentence ends with . ! or ? (not an ellipsis), then possibly a closing bracket or quote.
_SENTENCE_END = re.compile(rb"(?:^|[^.])[.!?](?:\)|\]|'|\xe2\x80\x99|\xe2\x80\x9d|\xc2\xbb)*\Z")


# Words whose point is not a sentence end (compared lowercased, with the points).
ABBREVIATIONS = frozenset(
    b"e.g. i.e. vs. cf. mr. mrs. ms. dr. prof. st. approx. fig. jr. sr. dept. vol. al. pp. a.k.a. viz.".split()
)
_LAST_WORD = re.compile(rb"[^\s(\[\"'\xe2\x80\x9c]*\Z")
# A point right after a digit may be a decimal point ("0." of "0.5", "3." of "3.11", "$2." of "$2.50").
_AFTER_DIGIT = re.compile(rb"[0-9][.]\Z")


def ends_sentence(text: bytes) -> bool:
    """Whether ``text`` ends a sentence: . ! or ? (not an ellipsis, not the point of an abbreviation such as
    "e.g."), then possibly a closing bracket or quote."""
    if _SENTENCE_END.search(text) is None:
        return False
    word = _LAST_WORD.search(text.rstrip(b")]'\"\xe2\x80\x99\xe2\x80\x9d\xc2\xbb"))
    return not (word and word.group(0).lower() in ABBREVIATIONS)


# A phrase may not end on what leads on to more (a comma, a colon, a dash, an open bracket, a slash, "&", "+"), nor
# like a sentence (a point that is not an abbreviation's or an initial's, "!" or "?"): it is an answer, not a sentence.
_LEADS_ON = set(",;:([{/&+-\u2013\u2014!?")
PHRASE_WORDS = 10
# Words a finished phrase does not end on: it would go on ("... is not mentioned in the").
_LEADING_WORDS = frozenset(
    "a an the of in on at to for from by with and or but nor is are was were be not no as than that which who".split())


def ends_phrase(text: bytes) -> bool:
    """Whether ``text`` is a finished phrase: something other than spaces, no leading or trailing space, not ending on
    a character that leads on, and not ending a sentence ("D.C." and "Jr." end a phrase; "I think so." does not)."""
    s = text.decode("utf-8", errors="replace")
    if not s.strip() or s != s.strip() or s[-1] in _LEADS_ON:
        return False
    if s.endswith(".."):  # an ellipsis: a phrase left unfinished
        return False
    if len(s.split()) > 1 and s.split()[-1].lower() in _LEADING_WORDS:
        return False
    if s.endswith("."):
        last = s.split()[-1]
        return "." in last[:-1] or len(last) <= 2 or last.lower().encode() in ABBREVIATIONS
    return True


def may_continue_as_number(text: bytes) -> bool:
    """A text ending in "<digit>." may be a number going on ("0." of "0.5"): only the model may end it there."""
    return _AFTER_DIGIT.search(text) is not None


def sentence_enders(vocab: Vocab) -> np.ndarray:
    """Text tokens that end a sentence when they follow a word."""
    return vocab.derived("sentence-enders", lambda: np.array(
        [bool(ok) and ends_sentence(b"a" + piece) for ok, piece in zip(vocab.tables[1], vocab.pieces)], dtype=bool
    ))


def max_closing_chars(vocab: Vocab, after: bytes) -> int:
    """The most text characters a single closing token carries before its quote."""
    def build() -> int:
        toks = np.flatnonzero(vocab.closing_mask(after))
        return max((char_count(vocab.pieces[t][: vocab.pieces[t].find(b'"')]) for t in toks), default=0)

    return vocab.derived(("max-closing-chars", after), build)
