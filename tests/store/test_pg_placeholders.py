"""SQLite's placeholders rewritten for psycopg, and what only looks like one left alone (the
statements themselves run against PostgreSQL in test_pg_connection.py)."""

from __future__ import annotations

import pytest

from choreo_ingest.store.pg_placeholders import translate_placeholders


@pytest.mark.parametrize(
    ("sqlite", "psycopg_sql"),
    [
        ("SELECT ? + ?", "SELECT %s + %s"),
        ("SELECT '?', \"a?\", ?", "SELECT '?', \"a?\", %s"),
        ("SELECT 'it''s ?', ?", "SELECT 'it''s ?', %s"),
        ("SELECT E'\\'?', ?", "SELECT E'\\'?', %s"),
        ("SELECT ? -- why?\n, ?", "SELECT %s -- why?\n, %s"),
        ("SELECT /* a? /* b? */ c? */ ?", "SELECT /* a? /* b? */ c? */ %s"),
        ("SELECT $$?$$, $x$ ? $x$, ?", "SELECT $$?$$, $x$ ? $x$, %s"),
        ("SELECT 'a%' LIKE ? || '%'", "SELECT 'a%%' LIKE %s || '%%'"),
    ],
)
def test_placeholders_are_translated_outside_literals_and_comments(
    sqlite: str, psycopg_sql: str
) -> None:
    assert translate_placeholders(sqlite) == psycopg_sql


def test_named_placeholders_with_a_dict_and_casts_left_alone() -> None:
    assert translate_placeholders("SELECT :a::text, ':b'", named=True) == "SELECT %(a)s::text, ':b'"
    assert translate_placeholders("SELECT 1::int, ?") == "SELECT 1::int, %s"
