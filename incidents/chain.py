"""Hash chains shared by the audit log and the export budget ledger.

A link's hash is SHA-256 over the canonical JSON array ``[label, previous hash, *values]``, so
every link commits to everything before it; the label keeps chains of different purposes apart.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

GENESIS_HASH = "0" * 64


def link_hash(label: str, prev_hash: str, *values: str | int) -> str:
    """The hex SHA-256 of one link, chained to ``prev_hash``."""
    body = json.dumps([label, prev_hash, *values], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def canonical_time(at: datetime) -> str:
    """UTC text of a link's time, to the second (databases differ below that; SQLite is naive)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
