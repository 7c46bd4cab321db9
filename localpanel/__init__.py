"""localpanel: polls and debates between open-weight LLMs, entirely on your own machine."""

__version__ = "0.1.0"
