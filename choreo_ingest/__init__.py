"""choreo-ingest: mirror OpenChoreo into a Backstage catalog, one bounded burst at a time.

The public surface for provider authors is re-exported here, each name loaded when first asked
for: importing any module of the package runs this file first, and a `run` with nothing due
must not pay for the provider interfaces (see `choreo_ingest/idle.py`), nor for `typing`
(see `choreo_ingest/idle_answer.py`).
"""

from __future__ import annotations

from choreo_ingest.lazy_exports import lazy_exports

TYPE_CHECKING = False
"""`typing.TYPE_CHECKING`, without importing typing (mypy takes any name so spelt as True)."""
if TYPE_CHECKING:
    from choreo_ingest.errors import (
        AuthError,
        ChoreoIngestError,
        ConfigError,
        CursorExpired,
        PermanentError,
        ProviderError,
        RetryAfter,
        TransientError,
    )
    from choreo_ingest.models import (
        Delta,
        Entity,
        EntityIteratorResult,
        Event,
        QueuedItem,
        QueueItem,
        entity_ref,
    )
    from choreo_ingest.providers.base import (
        BurstContext,
        EventHandlingProvider,
        IncrementalEntityProvider,
        ProviderFactory,
        QueueReader,
    )
    from choreo_ingest.version import __version__

_EXPORTS = {
    "AuthError": "choreo_ingest.errors",
    "BurstContext": "choreo_ingest.providers.base",
    "ChoreoIngestError": "choreo_ingest.errors",
    "ConfigError": "choreo_ingest.errors",
    "CursorExpired": "choreo_ingest.errors",
    "Delta": "choreo_ingest.models",
    "Entity": "choreo_ingest.models",
    "EntityIteratorResult": "choreo_ingest.models",
    "Event": "choreo_ingest.models",
    "EventHandlingProvider": "choreo_ingest.providers.base",
    "IncrementalEntityProvider": "choreo_ingest.providers.base",
    "PermanentError": "choreo_ingest.errors",
    "ProviderError": "choreo_ingest.errors",
    "ProviderFactory": "choreo_ingest.providers.base",
    "QueueItem": "choreo_ingest.models",
    "QueueReader": "choreo_ingest.providers.base",
    "QueuedItem": "choreo_ingest.models",
    "RetryAfter": "choreo_ingest.errors",
    "TransientError": "choreo_ingest.errors",
    "__version__": "choreo_ingest.version",
    "entity_ref": "choreo_ingest.models",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "AuthError",
    "BurstContext",
    "ChoreoIngestError",
    "ConfigError",
    "CursorExpired",
    "Delta",
    "Entity",
    "EntityIteratorResult",
    "Event",
    "EventHandlingProvider",
    "IncrementalEntityProvider",
    "PermanentError",
    "ProviderError",
    "ProviderFactory",
    "QueueItem",
    "QueueReader",
    "QueuedItem",
    "RetryAfter",
    "TransientError",
    "__version__",
    "entity_ref",
]
