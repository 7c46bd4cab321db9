"""The copy guard: from round 2 on, a rationale may not copy a long run from what its seat has read.

A guard counts **words** as the copy measure reads them (``words``: case and punctuation aside), so that a
model cannot slip a pasted sentence past it by writing "better-equipped" for "better equipped" or "Oxygen"
for "oxygen". Once the free text ends in the first ``n - 1`` words of a run of ``n`` words that occurs in a
text to avoid, a token that would write (or start writing) the run's last word is rejected and the draw made
again without it. It only narrows what the grammar allows, and gives up after ``MAX_REJECTIONS`` (the draw
then stands), so a ballot stays valid and still ends at a sentence end; a quote shorter than ``n`` words
stays possible, and so does any run the question or the options hold (quoting them is not copying).

``TokenGuard`` is the guard of runs saved before the guard counted words (``copy_guard_by: tokens``): it
took the token out of the draw before sampling; kept so that such a run resumes as it began.
"""

from __future__ import annotations

import re

from localpanel.engine.vocab import Vocab

# Letters, digits and apostrophes; an underscore separates words ("less_dense" is two), as a hyphen does.
_WORD = re.compile(r"(?:[^\W_]|')+", re.UNICODE)
_ENDS_IN_WORD = re.compile(r"(?:[^\W_]|')\Z", re.UNICODE)
MAX_REJECTIONS = 64  # redraws at one position before the guard lets the draw stand


def words(text: str) -> list[str]:
    """The words of ``text`` as the copy measure and the guard read them: lower case, no punctuation."""
    return [w.lower().strip("'") for w in _WORD.findall(text or "") if w.strip("'")]


class WordGuard:
    """No run of ``n`` words from ``texts`` unless the ``quotable`` texts (the question, the options) hold it."""

    def __init__(self, texts: list[str], n: int, quotable: list[str] | None = None):
        self.n = n
        allowed = {g for q in quotable or [] for g in _ngrams(words(q), n)}
        self.next: dict[tuple[str, ...], set[str]] = {}
        for text in texts:
            for g in _ngrams(words(text), n):
                if g not in allowed:
                    self.next.setdefault(g[:-1], set()).add(g[-1])

    def banned(self, text_tokens: list[int]) -> list[int]:
        return []  # this guard rejects drawn tokens (``rejects``); nothing is taken out beforehand

    def rejects(self, before: bytes, piece: bytes) -> bool:
        """Would appending ``piece`` to the free text ``before`` write, or start writing, the last word of a
        run to avoid? A word still open at the end counts as started if it is a prefix of that word. A piece
        glued to the word before it ("their" + "models") is read as if a space stood between them too, so
        that dropping the space is no way past the guard."""
        if not self.next:
            return False
        old = words(before.decode("utf-8", errors="ignore"))
        after = (before + piece).decode("utf-8", errors="ignore")
        new = words(after)
        open_word = bool(_ENDS_IN_WORD.search(after))
        first = len(old) - 1 if old and new[len(old) - 1] != old[-1] else len(old)  # the first word it wrote or extended
        if self._copies(new, first, open_word):
            return True
        if first == len(old) - 1 and new[first].startswith(old[-1]):  # glued: read the seam as a space as well
            split = [*new[:first], old[-1], new[first][len(old[-1]):], *new[first + 1:]]
            return self._copies(split, first + 1, open_word)
        return False

    def _copies(self, ws: list[str], first: int, open_word: bool) -> bool:
        """Does a run to avoid end at one of ``ws[first:]`` (the last one a prefix of it, if ``open_word``)?"""
        n = self.n
        for i in range(max(first, n - 1), len(ws)):
            follows = self.next.get(tuple(ws[i - n + 1:i]))
            if not follows:
                continue
            if ws[i] in follows or (i == len(ws) - 1 and open_word and any(w.startswith(ws[i]) for w in follows)):
                return True
        return False


def _ngrams(ws: list[str], n: int):
    return (tuple(ws[i:i + n]) for i in range(len(ws) - n + 1))


class TokenGuard:
    """No run of ``n`` tokens that occurs in the texts to avoid: once the free text ends in the first ``n - 1``
    tokens of such a run, the token that would complete it is taken out of the draw (never to nothing)."""

    def __init__(self, vocab: Vocab, texts: list[str], n: int):
        self.n = n
        self.next: dict[tuple[int, ...], set[int]] = {}
        for text in texts:
            for variant in (text, " " + text):  # as read after a space in the prompt, and at the start of a string
                toks = vocab.tokenize(variant)
                for i in range(len(toks) - n + 1):
                    self.next.setdefault(tuple(toks[i:i + n - 1]), set()).add(toks[i + n - 1])

    def banned(self, text_tokens: list[int]) -> list[int]:
        if len(text_tokens) < self.n - 1:
            return []
        return sorted(self.next.get(tuple(text_tokens[len(text_tokens) - self.n + 1:]), ()))

    def rejects(self, before: bytes, piece: bytes) -> bool:
        return False


Guard = WordGuard | TokenGuard
