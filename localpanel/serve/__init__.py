"""Stage 6, serve: the MCP server and the live web page, thin layers over ``localpanel.api``.

``Service`` pairs a ``RunRunner`` (starts, resumes and replays runs through the library's own calls, one at a
time in a queue) with a ``RunReader`` (snapshots, cards, charts, the run list, the catalog); ``web`` and
``mcp_server`` only translate HTTP and MCP to those calls.
"""
