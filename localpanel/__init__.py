"""localpanel: polls and debates between open-weight LLMs, entirely on your own machine."""

__version__ = "0.2.0"
