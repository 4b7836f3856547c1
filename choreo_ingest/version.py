"""The version of choreo-ingest: a leaf, so that any layer may name it."""

__version__ = "0.2.0"
