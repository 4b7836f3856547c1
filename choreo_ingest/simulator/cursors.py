"""Opaque listing cursors, shaped like Kubernetes continue tokens (unpadded base64url JSON).

A cursor names its listing (by a short digest of the route), the last item its page covered,
and the time its expiry counts from. It is not signed: the simulator only has to tell a cursor
it issued from a damaged one or one from another listing, as the real server does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Final

MAX_CURSOR_LENGTH: Final = 512
CURSOR_VERSION: Final = 1


class CursorRejected(ValueError):
    """The cursor is malformed or belongs to another listing (HTTP 400)."""


class CursorTooOld(ValueError):
    """The cursor is older than the server keeps cursors (HTTP 410)."""


@dataclass(frozen=True)
class CursorPosition:
    after: str
    """The listing continues with the items named after this one."""
    issued_at: float
    """Wall-clock time the cursor's expiry counts from."""


def listing_id(parent: tuple[str, ...]) -> str:
    return hashlib.blake2b("/".join(parent).encode(), digest_size=8, person=b"listing").hexdigest()


def encode_cursor(listing: str, after: str, issued_at: float) -> str:
    document = {"v": CURSOR_VERSION, "l": listing, "a": after, "t": round(issued_at, 3)}
    raw = json.dumps(document, separators=(",", ":"), ensure_ascii=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, listing: str, now: float, ttl: float | None) -> CursorPosition:
    """The position a cursor stands for; raises CursorRejected or CursorTooOld."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise CursorRejected("cursor is longer than 512 characters")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        document = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (UnicodeError, binascii.Error, ValueError) as error:
        raise CursorRejected("cursor is not a continue token issued by this server") from error
    if not isinstance(document, dict) or document.get("v") != CURSOR_VERSION:
        raise CursorRejected("cursor has an unknown format")
    after, issued_at = document.get("a"), document.get("t")
    if not isinstance(after, str) or not isinstance(issued_at, int | float):
        raise CursorRejected("cursor has an unknown format")
    if document.get("l") != listing:
        raise CursorRejected("cursor belongs to another listing")
    if ttl is not None and now - issued_at > ttl:
        raise CursorTooOld("the continue token has expired; restart the listing")
    return CursorPosition(after, float(issued_at))
