"""Stage 4, runs: what a run leaves behind and streams while it runs.

Takes the panel's turns and tally; gives the run directory (manifest, journal of turns, ``Transcript``), the
typed run events every front end reads, and the queue and machine lock that let one run use the cores at a
time.
"""
