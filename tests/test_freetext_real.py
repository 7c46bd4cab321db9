"""The free-text rule on every real model's vocabulary: the mask and the token check are one rule.

For every length from 0 to the maximum, the set of tokens the mask allows must be non-empty (until the
limit, where only a sentence end may close the text) and must hold only tokens the check accepts; the
closing tokens are checked both ways, exhaustively.
"""

import re

import numpy as np
import pytest

from localpanel.engine.freetext import FreeText, IntegerText, ends_sentence, integer_candidates
from localpanel.engine.grammar import Integer, Text
from localpanel.engine.llama import LlamaBackend
from localpanel.engine.vocab import utf8_advance
from localpanel.panel.ballot import RATIONALE_MAX, RATIONALE_MIN
from localpanel.weights.registry import load_registry, shipped_registry_path

pytestmark = pytest.mark.real

REAL_SIZE = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
# The real-size vocabularies are marked realsize: `-m "not realsize"` needs none of their files.
MODELS = ["smollm2-135m", "gemma3-270m", *(pytest.param(m, marks=pytest.mark.realsize) for m in REAL_SIZE)]
PROSE = (
    "Licensing the data matters, but the labs’ complaint is about contracts, not copyright. "
    "A model trained on scraped text is not the same as one distilled from an API (which forbids it). "
    "Still, the double standard is hard to miss — café owners and writers get no say at all! "
    "Is that fair? Only if every rule applies to everyone, and here it plainly does not. "
    "So the answer is yes, with caveats about law and practice that remain open today."
) * 2
AFTERS = ['", "attributed_to": ', '"}']


class _Vocabs(dict):
    """Each model's vocabulary, loaded (vocabulary only, no weights) the first time a test asks for it."""

    def __init__(self, backend, request):
        super().__init__()
        self.backend, self.request = backend, request
        self.registry = load_registry(shipped_registry_path())

    def __missing__(self, name):
        store = self.request.getfixturevalue("real_size_store" if name in REAL_SIZE else "real_store")
        spec = self.registry.model(name)
        self[name] = self.backend._vocab_model(spec, store.path_for(spec)).vocab
        return self[name]


@pytest.fixture(scope="module")
def vocabs(request):
    with LlamaBackend() as backend:
        yield _Vocabs(backend, request)


def state(vocab, after: str, body: bytes) -> FreeText:
    text = FreeText(vocab, Text("rationale", RATIONALE_MIN, RATIONALE_MAX), after)
    text.body = bytearray(body)
    text.need = utf8_advance(0, body)
    text.chars = sum(1 for b in body if b & 0xC0 != 0x80)
    return text


def check(text: FreeText, rng: np.random.Generator) -> np.ndarray:
    vocab = text.vocab
    mask = text.allowed()
    allowed = np.flatnonzero(mask)
    # Every closing token both ways, a sample of the rest both ways, and every body token at the length limit.
    closers = np.flatnonzero(vocab.closing_mask(text.after))
    room = vocab.char_lengths == text.seg.max_chars - text.chars
    edge = np.flatnonzero(vocab.body_mask(text.need) & room)
    sample = rng.choice(vocab.n, size=300, replace=False)
    for tok in np.concatenate([closers, edge, sample, allowed[rng.permutation(len(allowed))[:300]]]):
        assert (text.accepts(int(tok)) is not None) == bool(mask[tok]), (int(tok), vocab.pieces[tok], text.chars)
    return mask


# The lengths where the rule changes, every one: the start and the minimum, around the soft limit (half the
# maximum, where the decoder may close, and the "St." at 187 characters), and up to the hard limit; a stride
# through the rest. (All 401 lengths over four vocabularies took minutes and found nothing these do not.)
LENGTHS = sorted(set(range(0, RATIONALE_MIN + 12)) | set(range(RATIONALE_MAX // 2 - 24, RATIONALE_MAX // 2 + 16))
                 | set(range(RATIONALE_MAX - 24, RATIONALE_MAX + 1)) | set(range(0, RATIONALE_MAX, 13)))


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("after", AFTERS)
def test_mask_and_check_agree_at_every_length(model, after, vocabs):
    vocab = vocabs[model]
    rng = np.random.default_rng(0)
    quote = vocab.tokenize('"')
    for length in LENGTHS:
        body = PROSE[:length].encode()
        text = state(vocab, after, body)
        mask = check(text, rng)
        at_limit = text.chars >= RATIONALE_MAX
        if not at_limit:
            assert mask.any(), f"nothing allowed at {text.chars} characters"
        else:
            assert mask.any() == ends_sentence(body)
        # A sentence end long enough always lets the bare closing quote through; shorter ones never close, and
        # neither does the point of an abbreviation ("St." at 187 characters).
        cut = (PROSE[: max(0, length - 1)].rstrip(" .!?") + ".").encode()
        ended = state(vocab, after, cut)
        if len(quote) == 1 and vocab.closing_mask(ended.after)[quote[0]]:
            assert bool(ended.allowed()[quote[0]]) == (ended.chars >= RATIONALE_MIN and ends_sentence(cut))


@pytest.mark.parametrize("model", MODELS)
def test_mask_inside_a_character_allows_only_its_continuation(model, vocabs):
    vocab = vocabs[model]
    rng = np.random.default_rng(1)
    for body in ("Caf".encode() + "é".encode()[:1], b"x" * 200 + "’".encode()[:1], b"y" * 399 + "’".encode()[:2]):
        text = state(vocab, AFTERS[0], body)
        assert text.need > 0
        mask = check(text, rng)
        assert mask.any()
        for tok in np.flatnonzero(mask):
            assert vocab.pieces[tok][0] & 0xC0 == 0x80


def test_the_eleven_character_state_that_used_to_fail(vocabs):
    """The old mask admitted closing tokens at min_chars - 1 characters, which the check then refused."""
    vocab = vocabs["smollm2-135m"]
    text = state(vocab, AFTERS[0], b"I choose A.")  # 11 characters, a sentence end, one short of the minimum
    allowed = np.flatnonzero(text.allowed())
    assert len(allowed) > 0
    assert all(text.accepts(int(t)) is not None for t in allowed)
    for tok in allowed:
        piece = vocab.pieces[tok]
        if b'"' in piece:  # a closing token may only pass if it brings the text to the minimum itself
            assert len(piece[: piece.find(b'"')].decode()) >= 1


@pytest.mark.parametrize("model", MODELS)
def test_integer_rule_on_every_vocabulary(model, vocabs):
    """An integer ballot: '-'? digits, no leading zero, ended by the literal after it; mask and check agree."""
    vocab = vocabs[model]
    after = ', "attributed_to": '
    for body in (b"", b"-", b"0", b"4", b"42", b"-7", b"10", b"123456789012"[:11]):
        text = IntegerText(vocab, Integer("vote", 12), after)
        text.body = bytearray(body)
        mask = text.allowed()
        assert mask.any(), body
        for tok in integer_candidates(vocab, text.after):
            assert (text.accepts(int(tok)) is not None) == bool(mask[tok])
        for tok in np.flatnonzero(mask):
            kind, k, _ = text.accepts(int(tok))
            whole = body + vocab.pieces[tok][:k] if kind == "close" else body + vocab.pieces[tok]
            if kind == "close":
                assert re.fullmatch(rb"-?[1-9][0-9]*|0", whole), whole
            else:
                assert re.fullmatch(rb"(-?[1-9][0-9]*|0|-)", whole), whole
        closes = [t for t in np.flatnonzero(mask) if text.accepts(int(t))[0] == "close"]
        assert bool(closes) == (body not in (b"", b"-"))
