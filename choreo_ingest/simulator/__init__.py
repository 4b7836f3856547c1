"""The built-in OpenChoreo simulator, for `demo`, tests and benchmarks.

    World            a seeded world (generated lazily) plus mutations; the query API for tests
                     (org-era `orgs()`..., v1 `v1_namespaces()`...)
    SimulatorApi     the API contract, v1 (default) or org-era, as a pure, thread-safe handler:
                     handle(method, path, query, headers, body) -> SimResponse
    start_server     the handler on a loopback HTTP/1.1 server (RunningServer, a context manager)
    serve_forever    the blocking server behind `choreo-ingest simulate serve`

It imports nothing from the engine, the store or the providers.
"""

from choreo_ingest.simulator.api import SimResponse, SimulatorApi
from choreo_ingest.simulator.metering import LoggedRequest, SimulatorStats
from choreo_ingest.simulator.options import ApiGeneration, SimulatorOptions
from choreo_ingest.simulator.server import RunningServer, serve_forever, start_server
from choreo_ingest.simulator.world import Hidden, NotFound, Page, V1Page, World

__all__ = [
    "ApiGeneration",
    "Hidden",
    "LoggedRequest",
    "NotFound",
    "Page",
    "RunningServer",
    "SimResponse",
    "SimulatorApi",
    "SimulatorOptions",
    "SimulatorStats",
    "V1Page",
    "World",
    "serve_forever",
    "start_server",
]
