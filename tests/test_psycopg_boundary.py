"""psycopg (the optional `postgres` extra) is imported by the store only.

ruff's banned-api says so too, but the modules that may use some other banned library (the
server's starlette, the client's httpx) have the whole rule switched off: this looks at all.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "choreo_ingest"


def imports_psycopg(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(name == "psycopg" or name.startswith("psycopg.") for name in names):
            return True
    return False


def test_only_the_store_imports_psycopg() -> None:
    outside = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] != "store" and imports_psycopg(path)
    ]
    assert outside == []
    inside = [
        path.name for path in sorted((PACKAGE / "store").glob("*.py")) if imports_psycopg(path)
    ]
    assert "pg_connection.py" in inside  # the check sees the imports it looks for
