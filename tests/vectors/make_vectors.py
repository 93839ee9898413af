"""Generate ``tests/vectors/format-v1.json``, the test vectors of format v1 (``docs/format.md``).

Run from the repository root: ``.venv/bin/python tests/vectors/make_vectors.py``.

Most entries are deterministic: fixed seeds, data keys, report ids and nonces. Three kinds of
entry depend on randomness inside the library and cannot be reproduced byte for byte: HPKE wraps
(fresh ephemeral key per wrap), private key files (random salt and nonce) and SLIP-39 shares.
For those the script keeps the entry already in the file as long as it still opens to the
expected value with the current code, so running the script again leaves the file unchanged;
delete the file to record new ones. The X-Wing draft's own vector is copied from
``shared/vectors/xwing-draft08-vector1.json`` beside the repository (kept as is when absent).
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from incidents import crypto  # noqa: E402  (after the path set-up above, for direct runs)

OUTPUT = Path(__file__).resolve().parent / "format-v1.json"
XWING_DRAFT_VECTOR = ROOT.parent / "shared" / "vectors" / "xwing-draft08-vector1.json"

XWING_SEED = bytes(range(0x00, 0x20))
X25519_SEED = bytes(range(0x20, 0x40))
REPORT_ID = uuid.UUID("6f1c2a9e-3b47-4d58-9a0e-5c7b2d1f8e43")
OTHER_REPORT_ID = uuid.UUID("0b5e7d44-1f2a-4c3b-8e9d-a1b2c3d4e5f6")
DATA_KEY = bytes(range(0x40, 0x60))
NONCES = [bytes(range(0xA0, 0xAC)), bytes(range(0xB0, 0xBC)), bytes(range(0xC0, 0xCC))]
SEALED_VALUES = [
    ("occurred_on", "2025-03-14"),
    ("place_detail", "Кафе «Москва», столик у окна"),
    ("narrative", "Two men followed me from the metro to the café and photographed me."),
]
TYPED_RECEIPT = "7h2k qm9p oa4r-zxlu t6bd_8nwc.3efj"
SERVER_RECEIPT_SECRET = b"example receipt secret, 32 bytes or longer"
KEY_FILE_PASSPHRASE = "correct horse battery staple — пример ключа"
KEY_FILE_KDF = crypto.KdfParams(iterations=1, memory_kib=8192, lanes=1)
PADME_LENGTHS = [0, 1, 2, 3, 4, 5, 8, 9, 17, 100, 256, 257, 1000, 4096, 4100, 65537, 1_000_000]
PAD_EXAMPLES = [
    (b"", 256),
    (b"hello", 256),
    (b"x" * 252, 256),
    (b"x" * 253, 256),
    (b"y" * 300, 256),
    (b"z" * 1000, 256),
    (b"", 4096),
]


def main() -> None:
    """Write the vectors file, keeping still-valid randomized entries of the previous file."""
    previous = json.loads(OUTPUT.read_text(encoding="utf-8")) if OUTPUT.exists() else {}
    vectors = build_vectors(previous)
    OUTPUT.write_text(json.dumps(vectors, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")


def build_vectors(previous: dict[str, Any]) -> dict[str, Any]:
    """Return the whole vectors document."""
    keys = {
        "xwing": crypto.PrivateKey(suite=crypto.SUITE_XWING, seed=XWING_SEED),
        "x25519": crypto.PrivateKey(suite=crypto.SUITE_X25519, seed=X25519_SEED),
    }
    return {
        "description": "Test vectors of the incident register's format v1; see docs/format.md.",
        "generator": "tests/vectors/make_vectors.py",
        "format_version": crypto.FORMAT_VERSION,
        "xwing_draft": xwing_draft_entries(previous.get("xwing_draft", [])),
        "keys": [key_entry(name, key) for name, key in keys.items()],
        "padme": [{"length": n, "padded": crypto.padme_length(n)} for n in PADME_LENGTHS],
        "padding": [pad_entry(value, floor) for value, floor in PAD_EXAMPLES],
        "sealed_fields": [
            sealed_field_entry(name, value, nonce)
            for (name, value), nonce in zip(SEALED_VALUES, NONCES, strict=True)
        ],
        "wraps": [wrap_entry(name, key, previous.get("wraps", [])) for name, key in keys.items()],
        "receipts": [receipt_entry(TYPED_RECEIPT)],
        "private_key_files": [
            private_key_file_entry("xwing", keys["xwing"], previous.get("private_key_files", []))
        ],
        "seed_backups": [
            seed_backup_entry("xwing", keys["xwing"], previous.get("seed_backups", []))
        ],
    }


def xwing_draft_entries(previous: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The X-Wing draft's own test vector 1 (seed and public key), copied, not computed here."""
    if not XWING_DRAFT_VECTOR.exists():
        return previous
    draft = json.loads(XWING_DRAFT_VECTOR.read_text(encoding="utf-8"))
    return [{"source": draft["source"], "seed": draft["seed"], "public_key": draft["public_key"]}]


def key_entry(name: str, key: crypto.PrivateKey) -> dict[str, Any]:
    """Seed to public key, key id, fingerprint and public key file."""
    public = key.public_key()
    return {
        "name": name,
        "suite": public.suite,
        "seed": key.seed.hex(),
        "public_key": public.raw.hex(),
        "public_key_bytes": public.to_bytes().hex(),
        "key_id": public.key_id_hex,
        "fingerprint": public.fingerprint,
        "public_key_armor": public.to_armor(),
    }


def pad_entry(value: bytes, floor: int) -> dict[str, Any]:
    """A value and its padded form for a floor."""
    return {"value": value.hex(), "floor": floor, "padded": crypto.pad(value, floor=floor).hex()}


def sealed_field_entry(name: str, value: str, nonce: bytes) -> dict[str, Any]:
    """A sealed field with fixed data key, report id and nonce: fully reproducible."""
    blob = crypto.seal_field(value, data_key=DATA_KEY, report_id=REPORT_ID, name=name, nonce=nonce)
    return {
        "report_id": str(REPORT_ID),
        "data_key": DATA_KEY.hex(),
        "name": name,
        "value": value,
        "floor": crypto.field_floor(name),
        "nonce": nonce.hex(),
        "aad": crypto.field_aad(report_id=REPORT_ID, name=name).hex(),
        "padded_length": len(crypto.pad(value.encode("utf-8"), floor=crypto.field_floor(name))),
        "blob": blob.hex(),
    }


def wrap_entry(name: str, key: crypto.PrivateKey, previous: list[dict[str, Any]]) -> dict[str, Any]:
    """The sealed fields' data key wrapped to a test key (randomized: kept while it opens)."""
    public = key.public_key()
    info = crypto.wrap_info(report_id=REPORT_ID, key_id=public.key_id)

    def still_valid(entry: dict[str, Any]) -> bool:
        blob = bytes.fromhex(entry["blob"])
        return crypto.unwrap_data_key(blob, report_id=REPORT_ID, private_key=key) == DATA_KEY

    blob = _reuse(
        previous,
        {"recipient": name, "report_id": str(REPORT_ID), "data_key": DATA_KEY.hex()},
        still_valid,
    )
    if blob is None:
        blob = crypto.wrap_data_key(DATA_KEY, report_id=REPORT_ID, recipient=public).hex()
    return {
        "recipient": name,
        "suite": public.suite,
        "recipient_key_id": public.key_id_hex,
        "report_id": str(REPORT_ID),
        "data_key": DATA_KEY.hex(),
        "info": info.hex(),
        "blob": blob,
    }


def receipt_entry(typed: str) -> dict[str, Any]:
    """A receipt as a witness might type it, and everything derived from it."""
    normalized = crypto.normalize_receipt(typed)
    secrets = crypto.derive_witness_secrets(typed)
    witness_public = secrets.witness_key.public_key()
    return {
        "typed": typed,
        "normalized": normalized,
        "formatted": crypto.format_receipt(normalized),
        "lookup_token": secrets.lookup_token.hex(),
        "witness_seed": secrets.witness_key.seed.hex(),
        "witness_public_key_id": witness_public.key_id_hex,
        "server_secret": SERVER_RECEIPT_SECRET.hex(),
        "lookup_hash": crypto.lookup_hash(secrets.lookup_token, secret=SERVER_RECEIPT_SECRET).hex(),
    }


def private_key_file_entry(
    name: str, key: crypto.PrivateKey, previous: list[dict[str, Any]]
) -> dict[str, Any]:
    """An armored private key file with a known passphrase (randomized: kept while it opens)."""
    kdf = {
        "iterations": KEY_FILE_KDF.iterations,
        "memory_kib": KEY_FILE_KDF.memory_kib,
        "lanes": KEY_FILE_KDF.lanes,
    }

    def still_valid(entry: dict[str, Any]) -> bool:
        opened = crypto.decrypt_private_key(entry["armor"], passphrase=KEY_FILE_PASSPHRASE)
        return opened == key and crypto.inspect_private_key_file(entry["armor"]).kdf == KEY_FILE_KDF

    armor = _reuse(
        previous, {"key": name, "passphrase": KEY_FILE_PASSPHRASE, "kdf": kdf}, still_valid, "armor"
    )
    if armor is None:
        armor = crypto.encrypt_private_key(key, passphrase=KEY_FILE_PASSPHRASE, kdf=KEY_FILE_KDF)
    return {
        "key": name,
        "passphrase": KEY_FILE_PASSPHRASE,
        "passphrase_utf8": KEY_FILE_PASSPHRASE.encode("utf-8").hex(),
        "kdf": kdf,
        "armor": armor,
        "suite": key.suite,
        "key_id": key.key_id.hex(),
        "seed": key.seed.hex(),
    }


def seed_backup_entry(
    name: str, key: crypto.PrivateKey, previous: list[dict[str, Any]]
) -> dict[str, Any]:
    """SLIP-39 3-of-5 shares of a seed (randomized: kept while any three still combine)."""

    def still_valid(entry: dict[str, Any]) -> bool:
        return crypto.combine_seed(entry["shares"][:3], suite=key.suite) == key

    shares = _reuse(previous, {"key": name, "threshold": 3}, still_valid, "shares")
    if shares is None:
        shares = crypto.split_seed(key, threshold=3, shares=5)
    return {
        "key": name,
        "threshold": 3,
        "shares": shares,
        "suite": key.suite,
        "seed": key.seed.hex(),
    }


def _reuse(
    previous: list[dict[str, Any]],
    inputs: dict[str, Any],
    still_valid: Callable[[dict[str, Any]], bool],
    output: str = "blob",
) -> Any:
    """Return ``output`` of the previous entry made from the same inputs, if it still verifies."""
    for entry in previous:
        if all(entry.get(k) == v for k, v in inputs.items()):
            try:
                if still_valid(entry):
                    return entry[output]
            except (crypto.CryptoError, KeyError, ValueError):
                return None
    return None


if __name__ == "__main__":
    main()
