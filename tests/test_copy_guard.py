"""The copy guard's rule, on words as the copy measure reads them: the last word of a run to avoid is refused
however it is spelt in case and punctuation, and from its first letters on; shorter quotes and runs that the
question or options hold are not."""

from localpanel.engine.copyguard import WordGuard, words

PEER = "Testing building designs will result in improved structures that are better equipped to withstand earthquakes."
QUESTION = "Why would engineers test building designs that are better equipped to withstand earthquakes in a lab?"


def rejects(guard: WordGuard, before: str, piece: str) -> bool:
    return guard.rejects(before.encode(), piece.encode())


def test_the_last_word_of_a_run_is_refused_however_it_is_spelt():
    g = WordGuard([PEER], 5)
    before = "The result in improved structures"  # four of the peer's words in a row
    for piece in (" that", " That", " THAT", "-that", ", that", "_that"):
        assert rejects(g, before, piece), piece
    assert not rejects(g, before, " which")
    assert not rejects(g, "So the result in improved", " structures")  # a quote of four words stays possible
    # a run the draw was let to write (the guard gave up) does not make every later token a copy
    assert not rejects(g, "It will result in improved structures", " today")


def test_a_word_is_refused_from_its_first_letters():
    g = WordGuard([PEER], 5)
    before = "They are better-Equipped to"  # "are better equipped to" is four words of the peer's
    assert rejects(g, before, " with") and rejects(g, before, " w")  # the start of "withstand"
    assert not rejects(g, before, " resist")
    assert not rejects(g, before, " ")  # a space writes no word yet


def test_dropping_the_space_is_no_way_past():
    g = WordGuard([PEER], 5)
    before = "This will result in improved"  # "result in improved structures" comes next in the peer's
    assert rejects(g, before, "structures") and rejects(g, before, "struct")  # "improvedstructures"
    assert not rejects(g, before, "ly")  # "improvedly": not the start of "structures"
    assert not rejects(g, "This will result in improv", "ed")  # finishing a word is not gluing one on


def test_a_piece_of_several_words_is_checked_at_each():
    g = WordGuard([PEER], 5)
    assert rejects(g, "It will result in", " improved structures that")
    assert not rejects(g, "It will", " result in better")


def test_runs_the_question_or_options_hold_may_be_quoted():
    g = WordGuard([PEER], 5, quotable=[QUESTION, "Yes", "No"])
    # "that are better equipped to withstand earthquakes" is the question's as well as the peer's
    assert not rejects(g, "Designs that are better equipped to", " withstand")
    assert rejects(g, "It will result in improved", " structures")  # the peer's own words are still guarded


def test_words_are_the_measures_words():
    assert words("Better-equipped, SAFER designs; don't") == ["better", "equipped", "safer", "designs", "don't"]
    assert words("less_dense air, Été") == ["less", "dense", "air", "été"]
