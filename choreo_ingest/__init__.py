"""choreo-ingest: mirror OpenChoreo into a Backstage catalog, one bounded burst at a time.

The public surface for provider authors is re-exported here.
"""

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
