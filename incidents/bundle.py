"""Case bundles and desk outputs: the JSON the server hands to a desk and takes back.

A **bundle** is everything one staff member's key may need to work a case: the clear shell and
status history, the sealed fields, attachment metadata, additions, replies and notes (all
ciphertext), and only the wraps addressed to that one key. A bundle never holds plaintext, and
it is useless without the private key it is addressed to.

A **bundle file** (air-gapped use) is a list of bundles for one user's key with a SHA-256 digest
over its canonical body; **desk outputs** (wraps, sealed notes and replies, status changes) go
back the same way. The digest catches damage and careless edits; sealed content is protected by
its own AEAD and the wraps by HPKE, each bound to its report and key id.

Pure: no Flask, no database. Binary values are base64 (standard alphabet) in JSON.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from typing import Any

BUNDLE_FORMAT = "incidents-bundle"
OUTPUTS_FORMAT = "incidents-desk-outputs"
FORMAT_VERSION = 1
MAX_FILE_BYTES = 512 * 1024 * 1024


class BundleError(Exception):
    """Raised when a bundle or outputs file is malformed, altered, or not for this key."""


def b64(data: bytes) -> str:
    """Base64 text of ``data``."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: object) -> bytes:
    """Bytes of base64 ``text``; raise BundleError when it is not base64."""
    if not isinstance(text, str):
        raise BundleError("expected base64 text")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise BundleError("malformed base64 value") from exc


def canonical(body: Mapping[str, Any]) -> bytes:
    """Canonical JSON bytes of ``body`` (sorted keys, no spaces, UTF-8)."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(body: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical body."""
    return hashlib.sha256(canonical(body)).hexdigest()


def dump_file(kind: str, body: dict[str, Any]) -> bytes:
    """Serialize a bundle or outputs file: the body plus its format, version and digest."""
    document = {"format": kind, "version": FORMAT_VERSION, "body": body, "sha256": digest(body)}
    return json.dumps(document, ensure_ascii=False, indent=1, sort_keys=True).encode("utf-8")


def load_file(data: bytes, *, kind: str, key_id: str) -> dict[str, Any]:
    """Parse a bundle or outputs file for ``key_id`` and return its body.

    Raises BundleError when the file is not JSON of this ``kind`` and version, when its digest
    does not match (it was altered or damaged), or when it is addressed to another key.
    """
    if len(data) > MAX_FILE_BYTES:
        raise BundleError("the file is too large")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"this is not a {kind} file") from exc
    if not isinstance(document, dict) or document.get("format") != kind:
        raise BundleError(f"this is not a {kind} file")
    if document.get("version") != FORMAT_VERSION:
        raise BundleError(f"unsupported {kind} version {document.get('version')!r}")
    body = document.get("body")
    if not isinstance(body, dict) or document.get("sha256") != digest(body):
        raise BundleError("the file was altered or damaged (its checksum does not match)")
    if body.get("key_id") != key_id:
        raise BundleError("the file is addressed to another key")
    return body


def sealed_digest(sealed: Mapping[str, str]) -> str:
    """Digest of a report's sealed fields (base64 by name): names the ciphertext a rotation
    was made from, so the server can tell a repeat from a stale rotation."""
    return digest(dict(sealed))
