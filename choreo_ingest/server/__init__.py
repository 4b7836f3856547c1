"""`choreo-ingest serve`: the HTTP side of the long-running service (an optional extra).

Only this package imports starlette and uvicorn, and only the `serve` command imports it.
"""
