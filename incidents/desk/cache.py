"""The desk's local cache: case bundles and pending outputs, ciphertext only.

One SQLite file per key in the cache directory. It holds what the server sent (bundles: clear
shell and ciphertext), what the desk will send (outputs: ciphertext, key ids, status codes), and
the API token sealed under a key derived from the private key. Plaintext never goes in here.
``secure_delete`` zeroes freed pages, and the journal is not kept in WAL mode, so replaced
bundles (e.g. of a revoked case) do not linger in a side file.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (report_id TEXT PRIMARY KEY, bundle TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, kind TEXT NOT NULL, item TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
OUTPUT_KINDS = ("grants", "notes", "replies", "statuses", "rotations")


class DeskCache:
    """Bundles, outbox and small settings of one desk, in ``directory/desk-<key id>.sqlite3``
    (owner-only permissions)."""

    def __init__(self, directory: Path, *, key_id: str) -> None:
        """Open (or create) the cache for the key ``key_id`` under ``directory``."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory.chmod(0o700)
        self.path = directory / f"desk-{key_id}.sqlite3"
        self.key_id = key_id
        self.path.touch(mode=0o600, exist_ok=True)
        self.path.chmod(0o600)
        with self._connect() as connection:
            connection.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in one transaction (committed on success, rolled back on error)."""
        connection = sqlite3.connect(self.path)
        try:
            connection.execute("PRAGMA secure_delete = ON")
            connection.execute("PRAGMA journal_mode = DELETE")
            with connection:
                yield connection
        finally:
            connection.close()

    # -- bundles

    def replace_cases(self, bundles: list[dict[str, Any]]) -> None:
        """Make the cached cases exactly ``bundles`` (cases no longer sent are dropped)."""
        with self._connect() as connection:
            connection.execute("DELETE FROM cases")
            connection.executemany(
                "INSERT INTO cases (report_id, bundle) VALUES (?, ?)",
                [(bundle["report_id"], json.dumps(bundle)) for bundle in bundles],
            )

    def put_case(self, bundle: dict[str, Any]) -> None:
        """Store or replace one case bundle."""
        with self._connect() as connection:
            connection.execute(
                "INSERT OR REPLACE INTO cases (report_id, bundle) VALUES (?, ?)",
                (bundle["report_id"], json.dumps(bundle)),
            )

    def drop_case(self, report_id: str) -> None:
        """Forget one case."""
        with self._connect() as connection:
            connection.execute("DELETE FROM cases WHERE report_id = ?", (report_id,))

    def cases(self) -> list[dict[str, Any]]:
        """Every cached bundle, newest received first."""
        with self._connect() as connection:
            rows = connection.execute("SELECT bundle FROM cases").fetchall()
        bundles = [json.loads(row[0]) for row in rows]
        return sorted(
            bundles, key=lambda b: (b["shell"]["received_on"], b["report_id"]), reverse=True
        )

    def case(self, report_id: str) -> dict[str, Any] | None:
        """One cached bundle, or None."""
        with self._connect() as connection:
            row = connection.execute(
                "SELECT bundle FROM cases WHERE report_id = ?", (report_id,)
            ).fetchone()
        return json.loads(row[0]) if row else None

    # -- outbox

    def add_output(self, kind: str, item: dict[str, Any]) -> str:
        """Queue one output for the server; returns its outbox id."""
        if kind not in OUTPUT_KINDS:
            raise ValueError(f"unknown output kind {kind}")
        output_id = str(uuid.uuid4())
        with self._connect() as connection:
            (seq,) = connection.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM outbox").fetchone()
            connection.execute(
                "INSERT INTO outbox (id, seq, kind, item) VALUES (?, ?, ?, ?)",
                (output_id, seq, kind, json.dumps(item)),
            )
        return output_id

    def outputs(self) -> tuple[list[str], dict[str, Any]]:
        """The queued outputs as one batch body (for the key), and their outbox ids."""
        items = self.output_items()
        body: dict[str, Any] = {"key_id": self.key_id, **{kind: [] for kind in OUTPUT_KINDS}}
        for _output_id, kind, item in items:
            body[kind].append(item)
        return [output_id for output_id, _kind, _item in items], body

    def output_items(self) -> list[tuple[str, str, dict[str, Any]]]:
        """The queued outputs one by one: (outbox id, kind, item), oldest first."""
        with self._connect() as connection:
            rows = connection.execute("SELECT id, kind, item FROM outbox ORDER BY seq").fetchall()
        return [(row[0], row[1], json.loads(row[2])) for row in rows]

    def pending_count(self) -> int:
        """How many outputs wait to be sent."""
        with self._connect() as connection:
            (count,) = connection.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(count)

    def clear_outputs(self, output_ids: list[str]) -> None:
        """Remove outputs the server has stored."""
        with self._connect() as connection:
            connection.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in output_ids])

    # -- meta

    def get_meta(self, key: str) -> str | None:
        """A stored setting, or None."""
        with self._connect() as connection:
            row = connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def set_meta(self, key: str, value: str | None) -> None:
        """Store or clear a setting."""
        with self._connect() as connection:
            if value is None:
                connection.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                connection.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value)
                )
