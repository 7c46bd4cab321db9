"""The copy guard inside the real decoder, over a real vocabulary: an evaluator that pushes the rationale to
paste a peer's text token by token cannot, once the guard is on, not even with the case and punctuation
changed, and the ballot is still valid and ends at a sentence end; a real tiny-panel debate with the guard
replays identically, and one saved while the guard counted tokens resumes with that guard."""

import json

import numpy as np
import pytest

from localpanel import api
from localpanel.engine.copyguard import TokenGuard, WordGuard
from localpanel.engine.decoding import decode_plan
from localpanel.engine.freetext import ends_sentence
from localpanel.engine.grammar import compile_schema
from localpanel.engine.llama import LlamaBackend
from localpanel.engine.runtime import Sampling
from localpanel.panel.ballot import ballot_model
from localpanel.panel.copying import measure, words
from localpanel.panel.protocol import DebateSettings
from localpanel.weights.registry import load_registry, shipped_registry_path

pytestmark = pytest.mark.real

PEER = "Writing a small web framework is an excellent way to learn how routing and requests really work."
# the same words with the case and punctuation changed, as models did to get past a guard that counted tokens
DISGUISED = "Writing a small Web-Framework is an Excellent way to learn how routing-and-requests REALLY work."


@pytest.fixture(scope="module")
def vocab(real_store):
    spec = load_registry(shipped_registry_path()).model("smollm2-135m")
    with LlamaBackend() as backend:
        yield backend._vocab_model(spec, real_store.path_for(spec)).vocab


class Pasting:
    """An evaluator (see decoding.Evaluator) whose logits favour continuing ``target`` from the longest run of it
    that ends what has been evaluated; failing that, ending the sentence and the string."""

    def __init__(self, vocab, target: list[int]):
        self.vocab, self.target, self.history, self.rows, self.n_past = vocab, target, [], [], 0
        self.enders = [t for t in range(vocab.n) if vocab.pieces[t] in (b".", b'"', b'."')]

    def row(self) -> np.ndarray:
        out = np.zeros(self.vocab.n, dtype=np.float32)
        out[self.enders] = 5.0
        for k in range(min(len(self.target), len(self.history)), 0, -1):
            tail = self.history[-k:]
            for start in range(len(self.target) - k + 1):
                if self.target[start:start + k] == tail and start + k < len(self.target):
                    out[self.target[start + k]] = 30.0
                    return out
        if self.history and self.vocab.pieces[self.history[-1]].endswith(b'"'):  # a string opens: start pasting
            out[self.target[0]] = 30.0
        return out

    def eval(self, tokens, all_logits=False):
        self.rows = []
        for t in tokens:
            self.history.append(t)
            self.rows.append(self.row())
        self.n_past = len(self.history)

    def logits(self, i=-1):
        return self.rows[i].copy()

    def rollback(self, n_past):
        self.history = self.history[:n_past]
        self.n_past = n_past


def decode(vocab, guard, paste=PEER):
    target = vocab.tokenize(paste)
    ev = Pasting(vocab, target)
    ev.eval(vocab.tokenize("Ballot:"))
    plan = compile_schema(ballot_model(["Yes", "No"]).model_json_schema())
    d = decode_plan(ev, vocab, plan, Sampling(temperature=0.0, repeat_penalty=1.0), 1, 512, guard=guard)
    text = b"".join(vocab.pieces[t] for t in d.tokens).decode()
    return d, json.loads(text)


def test_without_the_guard_the_rationale_is_the_peers_text(vocab):
    d, ballot = decode(vocab, None)
    assert d.failure is None and ballot["rationale"] == PEER


@pytest.mark.parametrize("paste", [PEER, DISGUISED])
def test_with_the_guard_no_long_run_is_copied_and_the_ballot_stays_valid(vocab, paste):
    d, ballot = decode(vocab, WordGuard([PEER], 6), paste)
    assert d.failure is None and ballot["vote"] in ("Yes", "No")
    assert ends_sentence(ballot["rationale"].encode())  # still ends at a sentence end
    copied = measure("Ann", 2, ballot["rationale"], [("Bob", 1, PEER)], [])
    assert 0 < copied.words < 6  # a short quote, never a run of six words, however the case and hyphens are changed
    # without the guard the disguised paste is a copy of the whole text, as the measure reads it
    d, ballot = decode(vocab, None, paste)
    assert measure("Ann", 2, ballot["rationale"], [("Bob", 1, PEER)], []).words == len(words(PEER))


def test_the_token_guard_of_earlier_runs_still_takes_the_token_out(vocab):
    d, ballot = decode(vocab, TokenGuard(vocab, [PEER], 6))
    assert d.failure is None and ends_sentence(ballot["rationale"].encode())
    assert ballot["rationale"] != PEER
    peer = vocab.tokenize(PEER)  # five tokens of the peer's text make its sixth the one token taken out
    assert TokenGuard(vocab, [PEER], 6).banned(peer[:5]) == [peer[5]] and TokenGuard(vocab, [PEER], 6).banned(peer[:4]) == []


def test_a_real_debate_with_the_guard_is_valid_and_replays_identically(store_with_weights, registry):
    store = store_with_weights
    settings = DebateSettings(rounds=3, seed=4, early_stop=False, copy_guard=8)
    t = api.start_run("Should a small team write its own web framework?", ["Yes", "No", "Only for learning"],
                      registry=registry, store=store, panel="tiny", settings=settings, run_dir=store.runs_dir / "guarded",
                      with_moderator=False)
    assert all(x.valid for r in t.rounds for x in r.turns) and t.settings.copy_guard == 8
    assert api.load_run(store.runs_dir / "guarded", store).settings.copy_guard == 8  # in the manifest, for resume
    report = api.replay(store.runs_dir / "guarded", store=store)
    assert report.identical and report.turns_compared == 12, report.divergence


def test_a_run_saved_while_the_guard_counted_tokens_resumes_with_that_guard(store_with_weights, registry):
    """The docstring's promise, tested (issue 32.14): a manifest without copy_guard_by (saved while the guard counted
    tokens) is read as a guard of tokens, and a run cut after five turns resumes to the very ballots of the run
    made whole with that guard; a short guard makes the two guards write different texts."""
    import shutil

    store = store_with_weights
    settings = DebateSettings(rounds=2, seed=6, early_stop=False, copy_guard=3, copy_guard_by="tokens")
    question, options = "Should a small team write its own web framework?", ["Yes", "No"]
    whole = api.start_run(question, options, registry=registry, store=store, panel="tiny", settings=settings,
                          run_dir=store.runs_dir / "whole", with_moderator=False)
    cut = store.runs_dir / "cut"
    shutil.copytree(store.runs_dir / "whole", cut)
    manifest = json.loads((cut / "manifest.json").read_text())
    del manifest["settings"]["copy_guard_by"]
    (cut / "manifest.json").write_text(json.dumps(manifest))
    (cut / "transcript.json").unlink()
    lines = (cut / "turns.jsonl").read_text().splitlines(keepends=True)
    (cut / "turns.jsonl").write_text("".join(lines[:5]))
    resumed = api.resume(cut, store=store)
    assert resumed.settings.copy_guard_by == "tokens"
    texts = lambda t: [(x.participant, x.round, x.text) for r in t.rounds for x in r.turns]  # noqa: E731
    assert texts(resumed) == texts(whole)
    by_words = api.start_run(question, options, registry=registry, store=store, panel="tiny", with_moderator=False,
                             settings=settings.model_copy(update={"copy_guard_by": "words"}), run_dir=store.runs_dir / "w")
    assert texts(by_words)[4:] != texts(whole)[4:]  # round 2 differs under the other guard: the test can tell them apart
