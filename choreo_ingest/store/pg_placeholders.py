"""SQLite's placeholders in SQL text rewritten as psycopg's, for the PostgreSQL connection.

The store's SQL is written once, with SQLite's `?` (and `:name` with a dict of parameters);
`pg_connection` sends it to PostgreSQL through `translate_placeholders`, which rewrites what is a
placeholder and leaves alone what only looks like one: text inside string literals (with
PostgreSQL's `E'...'` backslash escapes), quoted identifiers, dollar quotes and comments (block
comments nest in PostgreSQL), and the `::` of a cast. psycopg reads `%` as the start of a
placeholder, so every other `%` is doubled.
"""

from __future__ import annotations

import functools
import re

_DOLLAR_QUOTE = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")


@functools.lru_cache(maxsize=1024)
def translate_placeholders(sql_text: str, *, named: bool = False) -> str:
    """SQLite's placeholders as psycopg's: `?` → `%s` (`named`: `:name` → `%(name)s`) outside
    string literals, quoted identifiers, dollar quotes and comments; every `%` → `%%`."""
    out: list[str] = []
    i, n = 0, len(sql_text)

    def skip_to(end: int) -> None:
        nonlocal i
        out.append(sql_text[i:end].replace("%", "%%"))
        i = end

    while i < n:
        char = sql_text[i]
        previous = sql_text[i - 1] if i else ""
        if char == "'":
            escapes = previous in "eE" and not (i > 1 and _is_word(sql_text[i - 2]))
            skip_to(_quoted_end(sql_text, i, "'", backslash=escapes))
        elif char == '"':
            skip_to(_quoted_end(sql_text, i, '"', backslash=False))
        elif sql_text.startswith("--", i):
            newline = sql_text.find("\n", i)
            skip_to(n if newline < 0 else newline + 1)
        elif sql_text.startswith("/*", i):
            skip_to(_block_comment_end(sql_text, i))
        elif char == "$" and not _is_word(previous) and (tag := _DOLLAR_QUOTE.match(sql_text, i)):
            close = sql_text.find(tag.group(), tag.end())
            skip_to(n if close < 0 else close + len(tag.group()))
        elif char == "?":
            out.append("%s")
            i += 1
        elif char == "%":
            out.append("%%")
            i += 1
        elif named and char == ":" and sql_text.startswith("::", i):
            out.append("::")
            i += 2
        elif named and char == ":" and i + 1 < n and _starts_word(sql_text[i + 1]):
            end = i + 1
            while end < n and _is_word(sql_text[end]):
                end += 1
            out.append(f"%({sql_text[i + 1 : end]})s")
            i = end
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _starts_word(char: str) -> bool:
    return char.isalpha() or char == "_"


def _quoted_end(text: str, start: int, quote: str, *, backslash: bool) -> int:
    """The index after the quote closing the one at `start` (a doubled quote is one quote)."""
    i = start + 1
    while i < len(text):
        if backslash and text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            if text.startswith(quote, i + 1):
                i += 2
                continue
            return i + 1
        i += 1
    return len(text)


def _block_comment_end(text: str, start: int) -> int:
    """The index after the `*/` closing the comment at `start` (PostgreSQL's nest)."""
    depth, i = 0, start
    while i < len(text):
        if text.startswith("/*", i):
            depth += 1
            i += 2
        elif text.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return len(text)
