"""Stage 2, engine: turning a conversation into a grammar-forced ballot on llama.cpp.

Takes ``ModelSpec``s and a ``RuntimeSettings``; gives a ``Backend`` (``LlamaBackend``, or ``ScriptedBackend``
for tests) whose ``generate`` answers ``GenerationRequest``s with ``Generation``s: the ballot text decoded under
its grammar, each option's probability, token counts and timings. Chat templates, the decoding plan, the
sampler, lockstep batching of seats that share a model, and the draw from probabilities live here.
"""
