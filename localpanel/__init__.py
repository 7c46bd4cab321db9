"""localpanel: polls and debates between open-weight LLMs, entirely on your own machine.

The package is laid out by the stages a question flows through; each imports only from the stages before it:

    weights/  models.yaml, sources, the sha256-pinned store          (what a model is, where its bytes are)
    engine/   llama.cpp, chat templates, grammar-forced decoding     (a conversation in, a ballot out)
    panel/    protocol, rounds, tally, moderator, coherence, copying (seats, rounds, what they add up to)
    runs/     manifest, journal, transcript, events, queue           (what a run leaves and streams)
    api.py    start_run, resume, replay, load_run, ...               (the library's front door)
    show/     cards and charts    serve/  MCP and the live page     eval/  benchmarks, reports, weights
    cli/      the command line, by command group

errors.py and atomic.py sit under all of them.
"""

__version__ = "0.2.0"

from localpanel import _moved  # noqa: E402

_moved.install()
