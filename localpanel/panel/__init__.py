"""Stage 3, panel: the protocol of a poll or a debate, and what its rounds add up to.

Takes a ``Question``, ``Seat``s and ``DebateSettings`` and a backend from the engine; gives ``Turn``s round by
round, the ``Tally`` (counts, label, margin, rankings, the seats' own probabilities), the moderator's report,
and the measures read from the ballots (coherence, copying).
"""
