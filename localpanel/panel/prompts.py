"""What each seat is shown, in which order, with which seed: the run's one order of the options and each
seat's rotation of it (a Latin square), the seeds of its turns, how seats name each other, and the prompts of
the first and the later rounds."""

from __future__ import annotations

import hashlib

import numpy as np

from localpanel.engine.draw import rotate
from localpanel.panel.terms import Question, Seat, Turn
from localpanel.weights.registry import Participant

def turn_seed(run_seed: int, participant: Participant, round_no: int, salt: str = "ballot") -> int:
    """A seed for one turn, derived from the run seed, the participant (name and seed) and the round."""
    key = f"{run_seed}|{participant.seed}|{participant.name}|{round_no}|{salt}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")


def round_seed(run_seed: int, round_no: int) -> int:
    """The seed of what a round shows every seat alike (the order of the ballots, in the shared layout)."""
    return int.from_bytes(hashlib.sha256(f"{run_seed}|round|{round_no}".encode()).digest()[:4], "little")


def shuffled(items: list[str], seed: int) -> list[str]:
    order = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in order]


def canonical_order(options: list[str], run_seed: int) -> list[str]:
    """One order of the options per run, from the option set and the seed alone (never the typed order):
    every seat is shown a rotation of it."""
    key = int.from_bytes(hashlib.sha256(f"{run_seed}|options".encode()).digest()[:4], "little")
    return shuffled(sorted(options), key)


def display_order(canonical: list[str], seat_index: int, round_no: int) -> list[str]:
    """A Latin square: within a round, seat i sees the canonical order rotated by i (and each round shifts it
    on by one), so that each option stands in each position as evenly as the number of seats allows."""
    return rotate(canonical, seat_index + round_no - 1)


def labels_for(seats: list[Seat], anonymous: bool) -> dict[str, str]:
    """How participants are named to each other: their names, or Panelist A, B, ... with --anonymous."""
    return panel_labels([s.name for s in seats], anonymous)


def panel_labels(names: list[str], anonymous: bool) -> dict[str, str]:
    if not anonymous:
        return {n: n for n in names}
    return {n: f"Panelist {chr(ord('A') + i)}" for i, n in enumerate(names)}


def persona_of(seat: Seat | Participant) -> str:
    participant = seat.participant if isinstance(seat, Seat) else seat
    return (participant.persona or "You are a thoughtful, independent panelist.").strip()


def system_prompt(seat: Seat | Participant, n_seats: int, rounds: int, label: str, integer: bool = False,
                  reason_first: bool = False) -> str:
    persona = persona_of(seat)
    if rounds == 1:
        setting = f"You are {label}, one of {n_seats} panelists who each answer a question on their own."
    else:
        setting = (
            f"You are {label}, one of {n_seats} panelists debating a question over up to {rounds} rounds. "
            "After each round you read the other panelists' ballots and may keep or change your vote."
        )
    return f"{persona}\n{setting}\n{ballot_fields(rounds, integer, reason_first)}"


def ballot_fields(rounds: int, integer: bool, reason_first: bool) -> str:
    """What the system prompt says of the ballot's fields."""
    vote = '"vote" is your answer, a whole number.' if integer else '"vote" is exactly one of the options.'
    if reason_first:
        fields = f'Reply with a JSON ballot. "rationale" works the question out in a few short plain sentences; then {vote}'
    else:
        fields = f'Reply with a JSON ballot. {vote} "rationale" states your main reason in one to three sentences of plain prose.'

    if rounds > 1:
        fields += ' From round 2 on, "attributed_to" names the panelist whose argument changed your vote, or null.'
    return fields


def _options_block(options: list[str]) -> str:
    if not options:
        return "Answer with a whole number."
    return "Options (vote for exactly one):\n" + "\n".join(f"- {o}" for o in options)


# The options come last in every prompt: a vote scored under another rotation of them re-reads only the options
# (and the chat template's few tokens after them), never an instruction that could as well come before.
def first_round_prompt(question: Question, option_order: list[str]) -> str:
    return f"{question.context}Question: {question.text}\nCast your ballot.\n{_options_block(option_order)}"


def context_block(documents: list[tuple[str, str]]) -> str:
    """The documents every seat reads before the question, each between a header with its name and an end mark."""
    if not documents:
        return ""
    parts = [f"--- Document: {name} ---\n{text.strip()}\n--- End of {name} ---" for name, text in documents]
    return "Read these documents before the question.\n" + "\n".join(parts) + "\n\n"


# With the copy guard on, the prompt also asks for what the guard enforces (without it, prompts are as they were, so
# that runs saved before replay identically).
# Measured on ARC (README): asking a seat to "answer the strongest argument against your vote" moved 16 of 44
# round-2 votes (7 right to wrong, none wrong to right); this asks for the words alone.
OWN_WORDS = "Write your rationale in your own words; do not repeat an earlier rationale."


def wording(participant: Participant, n_seats: int, rounds: int, label: str, integer: bool, reason_first: bool,
            round_no: int, own_words: bool = True, layout: str = "conversation") -> list[str]:
    """The instructions a seat has read by a later round: its system prompt and the round's framing, without the
    question, the options or any ballot. What the copy guard keeps a rationale from copying and the copy measure
    counts as the prompt's wording: one text, built here for both (``own_words``: the prompt asked for the seat's
    own words, as it does whenever the guard is on)."""
    if layout == "shared":
        return [shared_system_prompt(n_seats, rounds, integer, reason_first), round_framing(round_no, rounds, own_words),
                f"You are {label}. {persona_of(participant)}"]
    framing = later_round_prompt(Question(text="-", options=[]), [], round_no, rounds, [], own_words)
    return [system_prompt(participant, n_seats, rounds, label, integer, reason_first),
            *(line for line in framing.splitlines() if not line.startswith(("Question:", "Options", "- ")))]


def later_round_prompt(
    question: Question, option_order: list[str], round_no: int, rounds: int, peers: list[tuple[str, Turn]],
    own_words: bool = False,
) -> str:
    lines = [f"Round {round_no} of {rounds}. The other panelists' ballots from round {round_no - 1}:"]
    for label, turn in peers:
        if turn.valid:
            lines.append(f"- {label} voted {turn.vote}: {turn.rationale}")
        else:
            lines.append(f"- {label} abstained (no valid ballot).")
    lines += [
        f"Question: {question.text}",
        "Weigh these arguments, then cast your ballot for this round: keep your vote or change it."
        + (f" {OWN_WORDS}" if own_words else ""),
        _options_block(option_order),
    ]
    return "\n".join(lines)


# -- the shared layout -----------------------------------------------------------------------------------
# Every round is one prompt, laid out so that what all seats read comes first and what one seat reads last: the
# system prompt (no persona, no name), the documents, the question, every earlier round's ballots, each round in
# one order for every seat, and the round's framing; then the seat's name, persona and last vote, and its rotation
# of the options. The backend evaluates the common opening once per model, extends it round after round, and copies
# it to each seat (``share_prefix``), where the conversation layout has each seat read its peers' ballots itself.


def shared_system_prompt(n_seats: int, rounds: int, integer: bool = False, reason_first: bool = False) -> str:
    if rounds == 1:
        setting = f"You are one of {n_seats} panelists who each answer a question on their own."
    else:
        setting = (
            f"You are one of {n_seats} panelists debating a question over up to {rounds} rounds. "
            "After each round every panelist reads all the ballots of that round and may keep or change their vote."
        )
    return f"{setting}\n{ballot_fields(rounds, integer, reason_first)}"


def seat_part(participant: Participant, label: str, last_vote: str | None, round_no: int, option_order: list[str]) -> str:
    """What one seat alone reads, after the common opening: who it is, its last vote, its rotation of the options."""
    lines = [f"You are {label}. {persona_of(participant)}"]
    if last_vote is not None:
        lines.append(f"Your vote in round {round_no - 1} was {last_vote}.")
    lines.append(_options_block(option_order))
    return "\n".join(lines)


def round_framing(round_no: int, rounds: int, own_words: bool) -> str:
    """What a round asks of every seat alike (in the common opening, before the seat's own part)."""
    if round_no == 1:
        return "Cast your ballot."
    return (f"Round {round_no} of {rounds}. Weigh these arguments, then cast your ballot for this round: keep your vote "
            "or change it." + (f" {OWN_WORDS}" if own_words else ""))


def shared_prompt(question: Question, round_no: int, rounds: int, history: list[list[tuple[str, Turn]]], own_words: bool,
                  seat: str) -> str:
    """A round's prompt in the shared layout (after the system prompt): its common opening (the documents, the
    question, every earlier round's ballots, the seat's own among them, each round in one order for every seat,
    and the round's framing), then ``seat``, the seat's own part. Each round's opening extends the last one's up
    to its framing, so a model's opening is evaluated once and only extended round after round."""
    lines = [f"{question.context}Question: {question.text}"]
    for k, ballots in enumerate(history, start=1):
        lines.append(f"The panelists' ballots from round {k}:")
        for label, turn in ballots:
            if turn.valid:
                lines.append(f"- {label} voted {turn.vote}: {turn.rationale}")
            else:
                lines.append(f"- {label} abstained (no valid ballot).")
    lines += [round_framing(round_no, rounds, own_words), seat]
    return "\n".join(lines)
