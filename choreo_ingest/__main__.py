"""`python -m choreo_ingest`: the same entry as the `choreo-ingest` script."""

from choreo_ingest.cli import main

main()
