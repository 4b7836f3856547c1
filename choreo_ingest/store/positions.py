"""Named positions in the change log (how far a consumer such as the YAML mirror has read)."""

from __future__ import annotations

from pathlib import Path

from choreo_ingest.store.dialect import AnyConnection


def position_name(directory: Path) -> str:
    """The stored position of the YAML mirror in `directory` (another directory starts afresh)."""
    return f"mirror:{directory.resolve()}"


def get_position(conn: AnyConnection, name: str) -> int:
    """The stored position called `name`; 0 (before the first change) when none is stored."""
    value = conn.scalar("SELECT value FROM positions WHERE name = ?", [name])
    return 0 if value is None else int(value)


def set_position(conn: AnyConnection, name: str, value: int) -> None:
    with conn.transaction():
        conn.execute(
            """INSERT INTO positions (name, value) VALUES (?, ?)
               ON CONFLICT (name) DO UPDATE SET value = excluded.value""",
            [name, value],
        )
