"""Exceptions raised by the library. The CLI turns each into one clear sentence."""

from __future__ import annotations


class LocalpanelError(Exception):
    """Base class: the message is a complete sentence a user can act on."""

    exit_code = 1


class InputError(LocalpanelError):
    """Something the user gave us is wrong (bad option, unknown panel, ...): exit code 2."""

    exit_code = 2


class RegistryError(InputError):
    """models.yaml is malformed or refers to something that does not exist."""


class UnknownModelError(RegistryError):
    pass


class UnknownPanelError(RegistryError):
    pass


class NotPulledError(InputError):
    """A model is needed but its weights are not in the store yet."""


class QuestionError(InputError):
    """Something about the question itself stops it from running (it does not fit a context, its options read
    alike, it is malformed): unlike anything about the machine, the store or the registry, running it again
    elsewhere would not help, so an eval records it as a question that cannot run."""


class ContextOverflowError(QuestionError):
    """A prompt does not fit a participant's context window."""


class StoreError(LocalpanelError):
    """Getting, verifying or placing weights failed."""


class ChecksumMismatch(StoreError):
    pass


class GGUFError(StoreError):
    """A file is not a well-formed GGUF."""


class ModelLoadError(LocalpanelError):
    """llama.cpp could not load a model or create a context for it."""


class RunError(LocalpanelError):
    """A run directory is missing, damaged, or does not match what was asked."""


class RunNotFound(RunError):
    """No run by the name given: the page answers it with a 404."""


class UndecodableError(QuestionError):
    """A ballot cannot be decoded with this model: two options read as the same tokens."""
