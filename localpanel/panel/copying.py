"""How much of a rationale is copied: the longest run of words it shares with text its seat had read.

A debate adds something only if each round says something new. For every ballot after the first round, the
measure is the longest run of words (case and punctuation aside) that its rationale shares with an earlier
rationale (a peer's or its own) or with the wording of its own prompt, not counting a run that occurs in the
question or the options: quoting the question is not copying. Derived from the ballots, like every figure.
"""

from __future__ import annotations

from pydantic import BaseModel

from localpanel.engine.copyguard import words  # the guard reads words as the measure does

COPIED_WORDS = 8  # a shared run this long or longer is flagged as copied


class Copied(BaseModel):
    """One ballot's longest shared run of words, and where it was read."""

    participant: str
    round: int
    words: int  # 0: nothing shared
    source: str | None = None  # a peer's name, "own" (the seat's earlier rationale) or "prompt"
    source_round: int | None = None  # the round of the rationale it shares the run with
    run: str = ""  # the shared words

    @property
    def copied(self) -> bool:
        return self.words >= COPIED_WORDS


def longest_shared(text: list[str], source: list[str], excluded: str) -> tuple[int, int]:
    """The longest run of ``text``'s words that also occurs in ``source`` and is not itself in ``excluded`` (a
    space-joined word string, padded with spaces): (length, end index in ``text``)."""
    best, end = 0, 0
    prev = [0] * (len(source) + 1)
    for i, w in enumerate(text):
        cur = [0] * (len(source) + 1)
        for j, v in enumerate(source):
            if w == v:
                cur[j + 1] = prev[j] + 1
                length = cur[j + 1]
                if length > best:
                    # the longest tail of this run that the question and options do not hold
                    for n in range(length, best, -1):
                        if f" {' '.join(text[i - n + 1:i + 1])} " not in excluded:
                            best, end = n, i + 1
                            break
        prev = cur
    return best, end


def measure(participant: str, round_no: int, rationale: str, sources: list[tuple[str, int | None, str]],
            excluded: list[str]) -> Copied:
    """``sources``: (name, round, text) of what the seat had read: peers' and its own earlier rationales, its
    prompt's wording ("prompt"). ``excluded``: the question and the options."""
    mine = words(rationale)
    banned = " " + " | ".join(" ".join(words(x)) for x in excluded) + " "
    out = Copied(participant=participant, round=round_no, words=0)
    for name, when, text in sources:
        n, end = longest_shared(mine, words(text), banned)
        if n > out.words:
            out = Copied(participant=participant, round=round_no, words=n, source=name, source_round=when,
                         run=" ".join(mine[end - n:end]))
    return out


def copy_line(c: Copied) -> str:
    """'copied: 14 words from Qwen Pragmatist's round-1 rationale ("writing a small web framework ...")'."""
    where = ("its own earlier rationale" if c.source == "own" else "its prompt's wording" if c.source == "prompt"
             else f"{c.source}'s rationale")
    when = f" (round {c.source_round})" if c.source_round and c.source != "prompt" else ""
    shown = c.run if len(c.run) <= 90 else c.run[:87] + "…"
    return f"copied: {c.words} words in a row from {where}{when}: “{shown}”"


def copying(question: str, options: list[str], participants, rounds: list[list], rounds_total: int,
            integer: bool = False, reason_first: bool = False, anonymous: bool = False,
            own_words: bool = False, layout: str = "conversation") -> list[Copied]:
    """The measure for every valid ballot after round 1. ``participants``: the panel's (with personas, as the
    prompts were built); ``rounds``: each round's turns; ``own_words``: the prompts asked for the seat's own
    words (the copy guard was on), so that instruction is prompt wording too; ``layout``: how the prompts were laid
    out (their wording differs)."""
    from localpanel.panel.prompts import panel_labels, wording

    names = [p.name for p in participants]
    labels = panel_labels(names, anonymous)
    out = []
    for k, turns in enumerate(rounds[1:], start=2):
        for t in turns:
            if not t.valid or not t.rationale or t.participant not in names:
                continue
            prompt = "\n".join(wording(participants[names.index(t.participant)], len(names), rounds_total,
                                        labels[t.participant], integer, reason_first, k, own_words, layout))
            sources = [(x.participant if x.participant != t.participant else "own", r, x.rationale)
                       for r, earlier in enumerate(rounds[:k - 1], start=1) for x in earlier if x.valid and x.rationale]
            sources.append(("prompt", None, prompt))
            out.append(measure(t.participant, k, t.rationale, sources, [question, *options]))
    return out
