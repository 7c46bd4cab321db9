"""The release, in a module of its own so that every stage can read it without importing the package's face."""

__version__ = "0.2.0"
