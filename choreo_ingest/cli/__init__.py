"""The command line: parse, call, render, exit."""

from choreo_ingest.cli.app import app, main

__all__ = ["app", "main"]
