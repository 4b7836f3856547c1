"""Every error choreo-ingest raises on purpose.

    ChoreoIngestError
    ├── ConfigError                 bad config file, key, value or usage (exit 2)
    ├── ProviderLoadError           a configured provider cannot be imported or built (`run`: 3)
    ├── InboxFull                   the event inbox is full; new events refused (exit 2)
    ├── NotConfirmed                a destructive command's question answered no (exit 2)
    ├── ChangesGone                 a change feed consumer must copy the catalog again (410)
    ├── StateError                  the state store cannot be used (exit 4)
    │   ├── SchemaTooNew            written by a newer choreo-ingest
    │   ├── NotAStateFile           not a choreo-ingest DB, or corrupt
    │   └── LockHeld                another run holds the run lock (exit 75)
    ├── StateOutgrown               a newer release migrated a running serve's state (exit 75)
    └── ProviderError               a burst failed (exit 3)
        ├── TransientError          worth retrying (5xx, timeouts, connection errors)
        │   ├── RetryAfter          rate limited; come back after `retry_after` seconds
        │   ├── DeadlineExceeded    the burst deadline passed inside a page
        │   │   └── ServerStalled   ... while the server kept it waiting all of requestTimeout
        │   └── TokenUnavailable    the token endpoint failed so (retried as a request is)
        │       └── TokenRetryAfter  ... and said when to come back (also a RetryAfter)
        ├── PermanentError          retrying will not help (400, 401, 403, bad data)
        │   ├── AuthError           401/403: the credentials in openchoreo.auth
        │   │   ├── GrantRefused    the token grant refused (`run`: 2, a setting to mend)
        │   │   ├── CredentialsMissing  a 401 to a client given none (`run`: 2, too)
        │   │   └── TokenRefused    a 401 to the token the config gives (`run`: 2, too)
        │   ├── NotFoundError       404: the resource is gone (deleted while being walked)
        │   └── UnsupportedEvent    no API the server speaks has what an event names
        └── CursorExpired           a listing's cursor is gone; restart that listing

Third-party exceptions are translated into these once, at the module that owns the library.
Outside the tree: `IllegalTransition` (a ValueError) is a bug, a state change the design does not
allow, so it ends as an internal error (exit 1); `EntityRefError` (a ValueError) is what parsing
an entity ref says about a malformed one, handled where it is parsed.
"""

from __future__ import annotations

from choreo_ingest.version import __version__


class ChoreoIngestError(Exception):
    """Base class of every error choreo-ingest raises on purpose."""


class ConfigError(ChoreoIngestError):
    """The configuration (file, key or value) or the command line is wrong."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class AddressInUse(ConfigError):
    """`serve`'s address is taken by another process (the last `serve`, still stopping, say):
    unlike the rest of the configuration, worth trying again as it stands."""


class ProviderLoadError(ChoreoIngestError):
    """A configured provider could not be imported, built, or does not follow the protocol."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        super().__init__(f"provider {name!r}: {problem}")


class EntityRefError(ValueError):
    """A string that is not an entity ref (`[<kind>:][<namespace>/]<name>`): a parsing result the
    mapping handles (an owner annotation is skipped), never an error a command ends with."""


class IllegalTransition(ValueError):
    """A provider state change the state machine does not allow: a bug, never bad input."""


class NotConfirmed(ChoreoIngestError):
    """The question a destructive command asks on a terminal was answered no: nothing was done.
    Exit 2, as the refusal off a terminal without `--yes` (a ConfigError)."""

    def __init__(self) -> None:
        super().__init__("not confirmed: nothing was done")


class InboxFull(ChoreoIngestError):
    """A provider's inbox has no room for a batch of new events: all of them are refused (a
    batch is stored whole or not at all; exit 2). `pending`: the events it holds; `distinct`: the
    batch's own events once those about one object are coalesced. `never_fits`: the batch alone
    is over the limit, so sending it again cannot help."""

    def __init__(
        self, provider: str, limit: int, refused: int, pending: int, distinct: int
    ) -> None:
        self.provider = provider
        self.limit = limit
        self.refused = refused
        self.pending = pending
        self.never_fits = distinct > limit
        inbox = f"the event inbox of {provider!r}"
        if self.never_fits:
            message = (
                f"a batch of {distinct:,} events about different objects never fits "
                f"{inbox} (at most {limit:,} pending, `events.inboxCapacity`): all "
                f"{refused:,} refused; send at most {limit:,} at a time"
            )
        elif pending >= limit:
            limit_text = "the limit" if pending == limit else f"the limit is {limit:,}"
            message = (
                f"{inbox} is full ({pending:,} pending events, {limit_text}): "
                f"{refused:,} new events refused; the next run (`choreo-ingest run`, or `serve`'s "
                f"next tick) applies or drops the backlog, `choreo-ingest event purge {provider}` "
                "empties it"
            )
        else:
            message = (
                f"{inbox} has room for {limit - pending:,} more events ({pending:,} pending, "
                f"the limit is {limit:,}): all {refused:,} new events refused, as a batch is "
                "stored whole or not at all; send smaller batches, or let the next run "
                "(`choreo-ingest run`, or `serve`'s next tick) apply the backlog first"
            )
        super().__init__(message)


class AnswerTooLarge(ChoreoIngestError):
    """A feed request whose answer would hold more entity text than one answer is let hold
    (`feed.MAX_ANSWER_CHARS`): the service would hold it all in memory at once. Asking for
    fewer refs helps (the Backstage module halves a batch refused so)."""


class ChangesGone(ChoreoIngestError):
    """The changes a consumer asks for are not in the change log (pruned, or written to another
    state file than the one it copied): it copies the whole catalog again."""

    def __init__(
        self,
        reason: str,
        *,
        store_id: str,
        oldest_seq: int,
        advice: str = "resync from GET /entities",
    ) -> None:
        self.store_id = store_id
        self.oldest_seq = oldest_seq
        super().__init__(f"{reason}; {advice}")


class StateError(ChoreoIngestError):
    """The state store cannot be opened, read or written."""

    damaged = False
    """SQLite found the state file's pages malformed (`store.damage_note`)."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class SchemaTooNew(StateError):
    """The state file was written by a newer version of choreo-ingest."""

    def __init__(self, path: str, found: int, supported: int) -> None:
        self.found = found
        self.supported = supported
        super().__init__(
            f"{path}: state schema version {found} is newer than this choreo-ingest supports "
            f"({supported}, release {__version__}); upgrade choreo-ingest",
            path=path,
        )


class StateOutgrown(ChoreoIngestError):
    """A newer release migrated the state a running `serve` uses: it ends, exit 75 (worth
    starting again: its supervisor then starts the release installed now, or, if that is still
    this one, meets SchemaTooNew at the start, exit 4)."""


class NotAStateFile(StateError):
    """The file exists but is not a choreo-ingest state DB (or is corrupt)."""


class LockWaitTimedOut(StateError):
    """A statement waited past `lock_timeout` for a lock another session held (PostgreSQL): a
    call that met it reports it, where trying again at once would wait as long again."""


class LockHeld(StateError):
    """Another `choreo-ingest run` holds the run lock."""


class LockLost(StateError):
    """The run lock file this run locked was removed or replaced (by hand) while it held it: a
    run started since may hold the new one, so this one writes no more."""


class ProviderError(ChoreoIngestError):
    """A provider could not produce its next page."""

    def __init__(
        self,
        message: str,
        *,
        method: str | None = None,
        path: str | None = None,
        status: int | None = None,
        code: str | None = None,
        config_key: str | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.code = code
        self.config_key = config_key
        """The config key the message tells the operator to check, when it names one."""
        super().__init__(message)


class TransientError(ProviderError):
    """Upstream trouble that a later attempt may not meet."""

    exhausted = False
    """Every attempt the client makes met it: lasting trouble, which fails a burst even after it
    committed pages (a retry that did not fit the burst only pauses it)."""


class RetryAfter(TransientError):
    """The upstream asked us to come back later."""

    def __init__(self, message: str, *, retry_after: float, **fields: object) -> None:
        self.retry_after = retry_after
        super().__init__(message, **fields)  # type: ignore[arg-type]


class DeadlineExceeded(TransientError):
    """The burst deadline passed before a page was complete."""


class ServerStalled(DeadlineExceeded):
    """The burst deadline passed while the server kept a request waiting about as long as
    `requestTimeout` allows: a longer burst or a smaller page would not help."""


class ConnectDeadlineExceeded(ServerStalled):
    """The burst deadline passed while the way to the server was still being made (a TCP
    connect or TLS handshake that does not finish, a token not granted): a longer burst or a
    smaller page would not help, and the message says where to look."""


class TokenUnavailable(TransientError):
    """The OAuth2 token endpoint could not grant a token for now: 5xx, 408, 429, a timeout or a
    failed connection. The request that needed the token is retried as if it had failed so."""


class TokenRetryAfter(RetryAfter, TokenUnavailable):
    """The token endpoint could not grant a token for now and said when to ask again (a 429 or
    503 with `Retry-After`): waited out as the API's own `Retry-After` is."""


class PermanentError(ProviderError):
    """Retrying the same request will not help."""


class AuthError(PermanentError):
    """The API refused our credentials (401/403)."""

    @property
    def object_hidden(self) -> bool:
        """A 403 to a read of one object: it exists where this client may not look (OpenChoreo's
        lists leave such objects out rather than answer 403)."""
        return self.status == 403


class GrantRefused(AuthError):
    """The identity provider refused to grant a token (a 4xx but 408 and 429: a wrong client id
    or secret, token URL or scope): a setting to mend, as `check` says, not upstream trouble."""

    @property
    def object_hidden(self) -> bool:
        return False  # a 403 from the identity provider (Auth0's access_denied) hides nothing


class CredentialsMissing(AuthError):
    """The API answered 401 to a client that has no credentials configured (`openchoreo.auth`
    unset): a setting to mend, as `check` says, not trouble of the API's."""


class TokenRefused(AuthError):
    """The API answered 401 (INVALID_TOKEN, INVALID_CLAIMS) to the token the config gives as it
    is (`openchoreo.auth.token`, a `tokenFile`'s content): an expired, revoked or wrong token as
    a rule, which another token there mends, so a setting to mend, as `check` says, rather than
    upstream trouble. Not MISSING_TOKEN: a proxy took the header off, which no token mends."""


class NotFoundError(PermanentError):
    """HTTP 404: the resource is gone, typically deleted while the platform was being walked."""


class WebPageAnswer(PermanentError):
    """A success whose body is a web page (a web app's, a proxy's), not the API's JSON: at a
    root listing, a base URL that names something else, such as Backstage's own address."""


class UnsupportedEvent(PermanentError):
    """An event of a kind the API the server speaks does not have (a `Namespace` event at an
    org-era server): it can never apply, so it is parked at its first attempt."""


class CursorExpired(ProviderError):
    """A listing cursor expired (org era: 410; v1: a 500 on a cursor): that listing restarts."""


class CursorRejected(CursorExpired):
    """The server refused a listing cursor as malformed (org era: a 400 on a request with a
    cursor): that listing restarts once in a burst; refused again, the burst fails."""


TOO_LARGE = "TOO_LARGE"
"""The code of an answer larger than the client reads."""
NO_API_HERE = "NO_API_HERE"
"""The code of a server that answers no API generation's first listing (a 404, a web page):
before any cycle found the API at that address, `openchoreo.baseUrl` names something else."""


def needs_mending(error: BaseException) -> bool:
    """Whether `error` is a setting to mend (a config error, a token grant refused, a page too
    large to read at this `chunkSize`, a `baseUrl` with no OpenChoreo API behind it) rather
    than upstream trouble: a run met by nothing else exits 2, as `check` does, not 3."""
    if isinstance(error, PermanentError) and error.code in (TOO_LARGE, NO_API_HERE):
        return bool(error.config_key)
    return isinstance(error, ConfigError | GrantRefused | CredentialsMissing | TokenRefused)


def interrupted(error: BaseException) -> bool:
    """Whether `error` is an interrupt: a KeyboardInterrupt, or on Python 3.11 the RuntimeError
    a class statement wraps one in when it lands in a field's `__set_name__` (a dataclass's, as
    a module loads)."""
    if isinstance(error, RuntimeError):
        return isinstance(error.__cause__, KeyboardInterrupt)
    return isinstance(error, KeyboardInterrupt)
