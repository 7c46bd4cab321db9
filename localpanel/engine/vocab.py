"""A model's vocabulary as the decoder sees it: tokenizing, every token's bytes, and the masks that free
text inside a JSON string needs (no quote, backslash or control character; valid UTF-8)."""

from __future__ import annotations

import codecs
import ctypes
import re

import llama_cpp as L
import numpy as np

_FORBIDDEN = frozenset(b'"\\\x7f') | frozenset(range(0x20))
_ATTR_OK = L.LLAMA_TOKEN_ATTR_NORMAL | L.LLAMA_TOKEN_ATTR_BYTE
_ATTR_BAD = L.LLAMA_TOKEN_ATTR_CONTROL | L.LLAMA_TOKEN_ATTR_UNKNOWN | L.LLAMA_TOKEN_ATTR_UNUSED


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
        self._derived: dict = {}

    def adopt(self, other: "Vocab") -> None:
        """Take over the tables another handle on the same vocabulary already built."""
        self._tables, self._char_lengths = other._tables, other._char_lengths
        self._closing, self._special_re = other._closing, other._special_re
        self._derived = other._derived

    def derived(self, key, build):
        """A table the decoder derives from this vocabulary, built once (``build()``) and kept with it."""
        if key not in self._derived:
            self._derived[key] = build()
        return self._derived[key]

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
                if c > 3:  # no character has more than three continuation bytes
                    raise UnicodeDecodeError("utf-8", piece, 0, c, "too many continuation bytes")
                codecs.utf_8_decode(piece[c:], "strict", False)
            except UnicodeDecodeError:
                body_ok[t] = False
                continue
            lead[t], all_cont[t] = c, c == len(piece)
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

    def body_ok_at(self, token: int, need: int) -> bool:
        """``body_mask(need)[token]`` for one token, without building the mask."""
        _, body_ok, lead, all_cont = self.tables
        if not body_ok[token]:
            return False
        return bool(lead[token] == need or (need > 0 and all_cont[token] and lead[token] <= need))

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


def char_count(data: bytes) -> int:
    return sum(1 for b in data if b & 0xC0 != 0x80)
