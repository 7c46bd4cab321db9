"""Which writing systems a free text may use: those of the question it answers, and Latin.

A small model pushed off a word (by the copy guard, say) can switch script mid-sentence ("...to write its own
web框架."): the reader sees empty boxes and the rationale no longer reads. Free text keeps to the scripts the
question and options are written in (Latin always allowed: names, code and numbers mix into any text). A token
is foreign when it writes a letter of another known script, or starts a character whose every possible code point
lies in one (a byte-level vocabulary splits rare characters across tokens). Letters of scripts not listed here,
and every digit, space, punctuation mark and symbol, are never foreign.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

import numpy as np

# Code point ranges of the scripts that are told apart (the ranges' letters; a partial character is judged by the
# range it must fall in).
SCRIPTS: dict[str, tuple[tuple[int, int], ...]] = {
    "greek": ((0x0370, 0x03FF), (0x1F00, 0x1FFF)),
    "cyrillic": ((0x0400, 0x052F), (0x1C80, 0x1C8F), (0x2DE0, 0x2DFF), (0xA640, 0xA69F)),
    "armenian": ((0x0530, 0x058F),),
    "hebrew": ((0x0590, 0x05FF),),
    "arabic": ((0x0600, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF)),
    "indic": ((0x0900, 0x0DFF),),
    "thai": ((0x0E00, 0x0E7F),),
    "georgian": ((0x10A0, 0x10FF),),
    "hangul": ((0x1100, 0x11FF), (0x3130, 0x318F), (0xAC00, 0xD7AF)),
    "kana": ((0x3040, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F)),
    "cjk": ((0x3400, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3FFFF)),
}
# Scripts that are written together: Japanese mixes kana and kanji, Korean may use hanja.
TOGETHER = {"kana": {"cjk"}, "cjk": {"kana"}, "hangul": {"cjk"}}


def script_of(cp: int) -> str | None:
    """The listed script whose ranges hold code point ``cp``, or None."""
    for name, ranges in SCRIPTS.items():
        if any(lo <= cp <= hi for lo, hi in ranges):
            return name
    return None


def scripts_of(texts: Iterable[str]) -> tuple[str, ...]:
    """The scripts free text answering ``texts`` may use (sorted, for a stable record): those of their letters and
    the ones written with them; Latin and unlisted scripts are always allowed and not named."""
    found: set[str] = set()
    for text in texts:
        for ch in text:
            if unicodedata.category(ch).startswith("L") and (s := script_of(ord(ch))) is not None:
                found |= {s, *TOGETHER.get(s, ())}
    return tuple(sorted(found))


def _foreign_char(cp: int, allowed: frozenset[str]) -> bool:
    s = script_of(cp)
    return s is not None and s not in allowed and unicodedata.category(chr(cp)).startswith("L")


def _foreign_partial(lead: bytes, allowed: frozenset[str]) -> bool:
    """Whether a character that starts with the bytes ``lead`` (incomplete UTF-8) must be of a foreign script."""
    b = lead[0]
    need = 2 if 0xC0 <= b < 0xE0 else 3 if 0xE0 <= b < 0xF0 else 4 if 0xF0 <= b < 0xF8 else 0
    if len(lead) >= need:
        return False
    try:
        first = ord((lead + b"\x80" * (need - len(lead))).decode())
        last = ord((lead + b"\xbf" * (need - len(lead))).decode())
    except UnicodeDecodeError:  # no character starts so (a surrogate, an overlong form)
        return False
    for name, ranges in SCRIPTS.items():
        if name not in allowed and any(a <= first and last <= b for a, b in ranges):
            return True
    return False


_MASKS: dict[tuple, np.ndarray] = {}  # models that share a vocabulary (a panel's 0.5B and 1.5B) build it once


def foreign_tokens(pieces: list[bytes], allowed: Iterable[str]) -> np.ndarray:
    """A mask over the vocabulary: the tokens that would write (or start) a letter of a script not ``allowed``."""
    allowed = frozenset(allowed)
    key = (len(pieces), hash(tuple(pieces)), allowed)
    if key not in _MASKS:
        _MASKS[key] = _foreign_tokens(pieces, allowed)
        _MASKS[key].flags.writeable = False  # shared: read, never changed
    return _MASKS[key]


def _foreign_tokens(pieces: list[bytes], allowed: frozenset[str]) -> np.ndarray:
    out = np.zeros(len(pieces), dtype=bool)
    for tok, piece in enumerate(pieces):
        if not piece or piece.isascii():
            continue
        i = 0
        while i < len(piece) and 0x80 <= piece[i] < 0xC0:  # continuation bytes of a character begun earlier
            i += 1
        rest = piece[i:]
        text = rest.decode("utf-8", errors="ignore")
        if any(_foreign_char(ord(ch), allowed) for ch in text):
            out[tok] = True
            continue
        tail = len(rest)  # an incomplete character at the end: judged by the range it must fall in
        for back in range(1, min(4, len(rest)) + 1):
            if rest[-back] >= 0xC0:
                tail = len(rest) - back
                break
        if tail < len(rest) and _foreign_partial(rest[tail:], allowed):
            out[tok] = True
    return out
