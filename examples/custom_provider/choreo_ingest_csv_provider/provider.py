"""The CSV provider: one page of rows per `next()` call, resumed from a byte offset.

The cursor is `{"row": rows read, "byte": where the next row starts, "file": the file's version}`.
Each call opens the file, reads the header line, seeks to `byte` and reads at most `page_size`
rows, so memory stays flat however large the file is. When the file changed since the cursor was
written (another inode, size or mtime) the offset means nothing any more: the cycle restarts at
the first row (rows already read are simply upserted again).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import structlog

from choreo_ingest import (
    BurstContext,
    Entity,
    EntityIteratorResult,
    PermanentError,
    TransientError,
)
from choreo_ingest.models import JSON
from choreo_ingest_csv_provider.entities import Defaults, RowRejected, row_entity

log = structlog.get_logger("choreo_ingest_csv_provider")

REQUIRED_COLUMNS = ("kind", "name")


@dataclass(frozen=True)
class CsvProvider:
    path: Path
    page_size: int
    defaults: Defaults
    name: str = "csv"
    source_key = "providers: csv: path"  # with `source`: a cycle begun on another file begins again

    @property
    def source(self) -> str:
        return str(self.path)

    def around(self, burst: BurstContext) -> AbstractContextManager[BurstContext]:
        return nullcontext(burst)  # nothing to set up: every page opens the file itself

    def next(self, context: BurstContext, cursor: JSON) -> EntityIteratorResult:
        try:
            with self.path.open("rb") as file:
                return self._page(file, cursor)
        except FileNotFoundError:
            raise PermanentError(f"{self.path}: no such CSV file (providers: csv: path)") from None
        except csv.Error as error:
            raise PermanentError(f"{self.path}: not readable as CSV: {error}") from None
        except OSError as error:
            raise TransientError(f"{self.path}: cannot read: {error.strerror or error}") from error

    def _page(self, file: IO[bytes], cursor: JSON) -> EntityIteratorResult:
        version = _version(file)
        reader = csv.reader(_lines(file, self.path))
        header = [column.strip().lower() for column in next(reader, [])]
        missing = [column for column in REQUIRED_COLUMNS if column not in header]
        if header and missing:
            raise PermanentError(f"{self.path}: header lacks column(s) {', '.join(missing)}")
        row_number, counters = 0, {}
        if cursor is not None and cursor.get("file") == version:
            file.seek(int(cursor["byte"]))
            row_number = int(cursor["row"])
        elif cursor is not None:
            log.info("csv_changed_restarting", path=str(self.path), at_row=cursor.get("row"))
            counters["cursor_resets"] = 1

        entities: list[Entity] = []
        rejected = 0
        for row in _records(reader, self.page_size):
            row_number += 1
            try:
                fields = dict(zip(header, row, strict=False))
                entities.append(row_entity(fields, self.defaults, self.name, row_number))
            except RowRejected as reason:
                rejected += 1
                log.warning(
                    "csv_row_rejected", path=str(self.path), row=row_number, reason=str(reason)
                )
        if rejected:
            counters["rows_rejected"] = rejected
        end = file.tell()
        return EntityIteratorResult(
            done=end >= os.fstat(file.fileno()).st_size,
            entities=entities,
            cursor={"row": row_number, "byte": end, "file": version},
            counters=counters,
        )


def _records(reader: Iterator[list[str]], limit: int) -> Iterator[list[str]]:
    """Up to `limit` non-blank records."""
    count = 0
    while count < limit:
        row = next(reader, None)
        if row is None:
            return
        if any(cell.strip() for cell in row):
            count += 1
            yield row


def _lines(file: IO[bytes], path: Path) -> Iterator[str]:
    """Decoded lines, read one `readline()` at a time so `file.tell()` stays exact."""
    first = True
    for raw in iter(file.readline, b""):
        try:
            yield raw.decode("utf-8-sig" if first else "utf-8")
        except UnicodeDecodeError:
            raise PermanentError(f"{path}: not UTF-8 near byte {file.tell() - len(raw)}") from None
        first = False


def _version(file: IO[bytes]) -> str:
    status = os.fstat(file.fileno())
    return f"{status.st_ino}:{status.st_size}:{status.st_mtime_ns}"
