"""Check the independent reader (written only from docs/format.md) against the test vectors
and against reports filed through the register's web form.

The register's code is used here only as a black box, through the shared fixtures, to produce a
stored report; everything is then opened with :mod:`tests.independent.reader`.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
import unicodedata
import uuid
from pathlib import Path
from typing import Any

import pytest
from shamir_mnemonic import combine_mnemonics

from tests.factories import receipt_from, submit_report
from tests.independent import reader

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "tests" / "vectors" / "format-v1.json").read_text(encoding="utf-8"))
KEYS = {entry["name"]: entry for entry in VECTORS["keys"]}
DOCUMENTED_ENTRIES = {
    "xwing_draft",
    "keys",
    "padme",
    "padding",
    "sealed_fields",
    "wraps",
    "receipts",
    "private_key_files",
    "seed_backups",
}


def h(text: str) -> bytes:
    """Hex (as in the vectors file) to bytes."""
    return bytes.fromhex(text)


def test_vector_file_has_only_documented_entries() -> None:
    entries = {name for name in VECTORS if name not in ("description", "generator")}
    assert entries == DOCUMENTED_ENTRIES | {"format_version"}
    assert VECTORS["format_version"] == 1


# --- section 3 and 4: keys ------------------------------------------------------------------


@pytest.mark.parametrize("entry", VECTORS["xwing_draft"], ids=lambda e: e["source"][-16:])
def test_xwing_draft_vector(entry: dict[str, Any]) -> None:
    public_key = reader.derive_public_key(h(entry["seed"]), reader.SUITE_XWING)
    assert public_key.hex() == entry["public_key"]
    assert len(public_key) == 1216


@pytest.mark.parametrize("entry", VECTORS["keys"], ids=lambda e: e["name"])
def test_key_derivation(entry: dict[str, Any]) -> None:
    key = reader.key_info(h(entry["seed"]), entry["suite"])
    assert key.public_key.hex() == entry["public_key"]
    assert key.public_key_file_bytes.hex() == entry["public_key_bytes"]
    assert key.key_id_hex == entry["key_id"]
    assert key.fingerprint == entry["fingerprint"]
    assert reader.parse_key_id(entry["key_id"].upper()) == key.key_id
    assert reader.parse_public_key_file(h(entry["public_key_bytes"])) == (
        entry["suite"],
        key.public_key,
    )


@pytest.mark.parametrize("entry", VECTORS["keys"], ids=lambda e: e["name"])
def test_public_key_armor(entry: dict[str, Any]) -> None:
    text = entry["public_key_armor"]
    suite, public_key, kid, fingerprint = reader.read_public_key_armor(text)
    assert (suite, public_key.hex(), kid.hex(), fingerprint) == (
        entry["suite"],
        entry["public_key"],
        entry["key_id"],
        entry["fingerprint"],
    )
    # CRLF line ends are accepted.
    assert (
        reader.dearmor(text.replace("\n", "\r\n"), reader.KIND_PUBLIC).hex()
        == (entry["public_key_bytes"])
    )
    # The comment lines are informational; with them, the armor is reproduced byte for byte.
    comments = [f"{name}: {value}" for name, value in reader.armor_comments(text).items()]
    assert comments[1:] == [f"Key-Id: {entry['key_id']}", f"Fingerprint: {entry['fingerprint']}"]
    assert reader.armor(reader.KIND_PUBLIC, comments, h(entry["public_key_bytes"])) == text


def test_public_key_file_refusals() -> None:
    good = h(KEYS["xwing"]["public_key_bytes"])
    for bad in (b"IRPX" + good[4:], good[:4] + b"\x02" + good[5:], good[:5] + b"\x03" + good[6:]):
        with pytest.raises(reader.FormatError):
            reader.parse_public_key_file(bad)
    with pytest.raises(reader.FormatError):
        reader.parse_public_key_file(good[:-1])
    # An ML-KEM coefficient >= q (3329) fails the FIPS 203 modulus check.
    broken = bytearray(good)
    broken[6:9] = b"\xff\xff\xff"
    with pytest.raises(reader.FormatError):
        reader.parse_public_key_file(bytes(broken))
    with pytest.raises(reader.FormatError):
        reader.dearmor(KEYS["xwing"]["public_key_armor"], reader.KIND_PRIVATE)
    with pytest.raises(reader.FormatError):
        reader.dearmor(
            KEYS["x25519"]["public_key_armor"].replace("SVJQ", "SVJ*"), reader.KIND_PUBLIC
        )


# --- section 9: padding ---------------------------------------------------------------------


@pytest.mark.parametrize("entry", VECTORS["padme"], ids=lambda e: str(e["length"]))
def test_padme(entry: dict[str, int]) -> None:
    assert reader.padme(entry["length"]) == entry["padded"]


def test_padme_examples_of_the_document() -> None:
    assert [reader.padme(n) for n in (9, 257, 1000, 4100, 129)] == [10, 272, 1024, 4352, 144]
    assert len(reader.pad(b"x" * 5000, 4096)) == 5120


@pytest.mark.parametrize(
    "entry", VECTORS["padding"], ids=lambda e: f"{len(e['value']) // 2}-{e['floor']}"
)
def test_padding(entry: dict[str, Any]) -> None:
    value = h(entry["value"])  # the vectors give the value as hex bytes
    padded = reader.pad(value, entry["floor"])
    assert padded.hex() == entry["padded"]
    assert reader.unpad(padded) == value


def test_unpad_refusals() -> None:
    for bad in (b"\x00\x00\x00", b"\x00\x00\x00\x05abc", b"\x00\x00\x00\x01a\x00\x01"):
        with pytest.raises(reader.FormatError):
            reader.unpad(bad)


# --- section 8: sealed fields ---------------------------------------------------------------


@pytest.mark.parametrize("entry", VECTORS["sealed_fields"], ids=lambda e: e["name"])
def test_sealed_field(entry: dict[str, Any]) -> None:
    data_key, nonce = h(entry["data_key"]), h(entry["nonce"])
    assert reader.field_aad(entry["report_id"], entry["name"]).hex() == entry["aad"]
    assert reader.field_floor(entry["name"]) == entry["floor"]
    blob = reader.seal_field(data_key, entry["report_id"], entry["name"], entry["value"], nonce)
    assert blob.hex() == entry["blob"]
    assert len(blob) == 30 + entry["padded_length"]
    assert reader.open_field(data_key, entry["report_id"], entry["name"], blob) == entry["value"]


def test_sealed_field_refusals() -> None:
    entry = VECTORS["sealed_fields"][1]
    data_key, blob = h(entry["data_key"]), h(entry["blob"])
    with pytest.raises(reader.DecryptionError):
        reader.open_field(data_key, entry["report_id"], "narrative", blob)
    with pytest.raises(reader.DecryptionError):
        reader.open_field(data_key, uuid.uuid4(), entry["name"], blob)
    tampered = bytearray(blob)
    tampered[40] ^= 1
    with pytest.raises(reader.DecryptionError):
        reader.open_field(data_key, entry["report_id"], entry["name"], bytes(tampered))
    for prefix in (b"\x02\x01", b"\x01\x02"):
        with pytest.raises(reader.FormatError):
            reader.open_field(data_key, entry["report_id"], entry["name"], prefix + blob[2:])
    with pytest.raises(reader.FormatError):
        reader.open_field(data_key, entry["report_id"], entry["name"], blob[:29])


# --- section 10: wraps ----------------------------------------------------------------------


@pytest.mark.parametrize("entry", VECTORS["wraps"], ids=lambda e: e["recipient"])
def test_wrap_opens(entry: dict[str, Any]) -> None:
    key = reader.key_info(h(KEYS[entry["recipient"]]["seed"]), entry["suite"])
    assert key.key_id_hex == entry["recipient_key_id"]
    info = reader.wrap_info(entry["report_id"], key.key_id)
    assert info.hex() == entry["info"]
    assert len(info) == 66
    blob = h(entry["blob"])
    assert len(blob) == {1: 1186, 2: 98}[entry["suite"]]
    assert reader.open_wrap(blob, entry["report_id"], key).hex() == entry["data_key"]


@pytest.mark.parametrize("entry", VECTORS["wraps"], ids=lambda e: e["recipient"])
def test_wrap_refusals(entry: dict[str, Any]) -> None:
    key = reader.key_info(h(KEYS[entry["recipient"]]["seed"]), entry["suite"])
    blob = h(entry["blob"])
    with pytest.raises(reader.DecryptionError):
        reader.open_wrap(blob, uuid.uuid4(), key)
    other = next(name for name in KEYS if name != entry["recipient"])
    with pytest.raises(reader.FormatError):
        reader.open_wrap(blob, entry["report_id"], reader.key_info(h(KEYS[other]["seed"]), 1))
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(reader.DecryptionError):
        reader.open_wrap(bytes(tampered), entry["report_id"], key)


@pytest.mark.parametrize("suite", [1, 2])
def test_wrap_round_trip(suite: int) -> None:
    key = reader.key_info(bytes(range(32)), suite)
    report_id = uuid.uuid4()
    data_key = os.urandom(32)
    blob = reader.make_wrap(data_key, report_id, key.public_key, suite)
    assert reader.open_wrap(blob, report_id, key) == data_key


def test_vectors_form_a_complete_report() -> None:
    """``wraps`` + ``sealed_fields``: a small report that opens with each test key."""
    report_id = VECTORS["sealed_fields"][0]["report_id"]
    sealed = {f"{e['name']}_sealed": h(e["blob"]) for e in VECTORS["sealed_fields"]}
    expected = {e["name"]: e["value"] for e in VECTORS["sealed_fields"]}
    for entry in VECTORS["wraps"]:
        assert entry["report_id"] == report_id
        key = reader.key_info(h(KEYS[entry["recipient"]]["seed"]), entry["suite"])
        assert reader.read_report(report_id, sealed, h(entry["blob"]), key) == expected


# --- section 11: receipts -------------------------------------------------------------------


@pytest.mark.parametrize("entry", VECTORS["receipts"], ids=lambda e: e["normalized"])
def test_receipt(entry: dict[str, Any]) -> None:
    normalized = reader.normalize_receipt(entry["typed"])
    assert normalized == entry["normalized"]
    assert reader.format_receipt(normalized) == entry["formatted"]
    assert reader.normalize_receipt(entry["formatted"]) == normalized
    token = reader.lookup_token(normalized)
    assert token.hex() == entry["lookup_token"]
    assert reader.witness_key_seed(normalized).hex() == entry["witness_seed"]
    assert reader.witness_key(normalized).key_id_hex == entry["witness_public_key_id"]
    secret = h(entry["server_secret"]).decode("utf-8")  # the configured text, as hex bytes
    assert reader.lookup_hash(token, secret).hex() == entry["lookup_hash"]


def test_receipt_normalisation_rules() -> None:
    normalized = VECTORS["receipts"][0]["normalized"]
    assert normalized == "7H2KQM9P0A4RZX1VT6BD8NWC3EFJ"
    # Cyrillic look-alikes (Н К М Р о Х Т В С З Е Ј), no-break space, en dash, minus sign.
    typed = "7\u041d2\u041a\u00a0Q\u041c9\u0420\u2013\u043ea4r Z\u04251U\u2212"
    typed += "\u04226\u0412D 8NW\u0421 \u0417\u0415F\u0408"
    assert reader.normalize_receipt(typed) == normalized
    assert reader.normalize_receipt(" " + normalized.lower() + "\n") == normalized
    for bad in (normalized[:-1], normalized + "0", normalized[:-1] + "é", normalized[:-1] + "*"):
        with pytest.raises(reader.FormatError):
            reader.normalize_receipt(bad)


# --- section 7: private key files -----------------------------------------------------------


@pytest.mark.parametrize("entry", VECTORS["private_key_files"], ids=lambda e: e["key"])
def test_private_key_file(entry: dict[str, Any]) -> None:
    passphrase = entry["passphrase"]
    assert reader.normalize_passphrase(passphrase).hex() == entry["passphrase_utf8"]
    parsed = reader.parse_private_key_file(reader.dearmor(entry["armor"], reader.KIND_PRIVATE))
    assert (parsed.iterations, parsed.memory_kib, parsed.lanes) == (
        entry["kdf"]["iterations"],
        entry["kdf"]["memory_kib"],
        entry["kdf"]["lanes"],
    )
    assert (parsed.suite, parsed.key_id.hex()) == (entry["suite"], entry["key_id"])
    key = reader.open_private_key_file(entry["armor"], passphrase)
    assert key.seed.hex() == entry["seed"]
    assert key.key_id_hex == entry["key_id"] == KEYS[entry["key"]]["key_id"]
    with pytest.raises(reader.WrongPassphraseError):
        reader.open_private_key_file(entry["armor"], passphrase + " ")


def test_private_key_file_header_is_authenticated() -> None:
    entry = VECTORS["private_key_files"][0]
    data = bytearray(reader.dearmor(entry["armor"], reader.KIND_PRIVATE))
    data[10] ^= 2  # the Argon2id iteration count, 1 -> 3, still within range
    text = reader.armor(reader.KIND_PRIVATE, [], bytes(data))
    with pytest.raises(reader.WrongPassphraseError):
        reader.open_private_key_file(text, entry["passphrase"])
    with pytest.raises(reader.FormatError):
        reader.parse_private_key_file(bytes(data[:-1]))


@pytest.mark.parametrize("suite", [1, 2])
def test_private_key_file_passphrase_is_nfc(suite: int) -> None:
    key = reader.key_info(bytes(range(32, 64)), suite)
    composed = "Ёлка, café, Đorđe, й"
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    text = reader.write_private_key_file(
        key, decomposed, iterations=1, memory_kib=8192, lanes=1, comments=["Suite: test"]
    )
    for typed in (composed, decomposed):
        assert reader.open_private_key_file(text, typed) == key
    with pytest.raises(reader.WrongPassphraseError):
        reader.open_private_key_file(text, composed.upper())
    # A reader refuses parameters outside the accepted range before running Argon2id.
    with pytest.raises(reader.FormatError):
        reader.write_private_key_file(key, composed, iterations=1, memory_kib=7, lanes=1)


# --- section 12: seed backups ---------------------------------------------------------------


@pytest.mark.parametrize("entry", VECTORS["seed_backups"], ids=lambda e: e["key"])
def test_seed_backup(entry: dict[str, Any]) -> None:
    shares = entry["shares"]
    assert len(shares) == 5
    assert all(len(share.split()) == 33 for share in shares)
    for chosen in itertools.combinations(shares, entry["threshold"]):
        seed = combine_mnemonics(list(chosen), passphrase=b"")
        assert seed.hex() == entry["seed"]
        assert reader.key_info(seed, entry["suite"]).key_id_hex == KEYS[entry["key"]]["key_id"]
    with pytest.raises(Exception, match="mnemonics"):
        combine_mnemonics(shares[:2], passphrase=b"")


# --- section 13: reports filed through the web form, read from the raw database -------------

FILED = {
    "occurred_on": "2024-11-05",
    # decomposed "é" (NFD): field values are sealed without Unicode normalisation
    "place_detail": "Кафе «Ёлка», Cafe\u0301 2nd floor — table 7 ☕",
    "narrative": "\n".join(["Independent-reader narrative: «Они сказали» — 𝔘𝔫𝔦𝔠𝔬𝔡𝔢"] * 90),
    "targeted_person": "my colleague Ђорђе (Đorđe) — the reader test",
    "perpetrator_description": "tall man, green scarf, spoke Serbian — ID 42",
    "contact": "signal: reader.test.77 / ✉ reader@example.org",
}


def _query(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    if database_url.startswith("sqlite:///"):
        connection = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        try:
            return connection.execute(sql).fetchall()
        finally:
            connection.close()
    import psycopg

    with psycopg.connect(_conninfo(database_url)) as connection:
        return connection.execute(sql).fetchall()  # type: ignore[arg-type]


def _conninfo(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def test_filed_report_opens_from_the_raw_database(
    client: Any, settings: Any, organizer: Any
) -> None:
    response = submit_report(client, **FILED)
    assert response.status_code == 200, response.status_code
    receipt = receipt_from(response)
    database_url = str(settings.database_url)

    rows = _query(
        database_url,
        "SELECT id, format_version, witness_lookup_hash, witness_public_key FROM reports",
    )
    assert len(rows) == 1
    stored_id, format_version, stored_lookup_hash, stored_witness_key = rows[0]
    assert format_version == 1
    if database_url.startswith("sqlite:///"):
        assert isinstance(stored_id, str)
        assert len(stored_id) == 32
        assert stored_id == stored_id.lower()
        report_id = uuid.UUID(hex=stored_id)
    else:
        assert isinstance(stored_id, uuid.UUID)
        report_id = stored_id
    assert report_id.version == 4

    key_text = organizer.private_path.read_text(encoding="utf-8")
    if database_url.startswith("sqlite:///"):
        opened = reader.open_report_from_sqlite(
            database_url.removeprefix("sqlite:///"), report_id, key_text, organizer.passphrase
        )
    else:
        opened = reader.open_report_from_postgres(
            _conninfo(database_url), report_id, key_text, organizer.passphrase
        )
    assert opened == FILED
    assert len(FILED["narrative"].encode()) > 4092  # exercises PADME above the narrative floor

    # The receipt shown to the witness gives the stored lookup hash and witness public key.
    normalized = reader.normalize_receipt(receipt)
    assert reader.format_receipt(normalized) == receipt
    token = reader.lookup_token(normalized)
    assert reader.lookup_hash(token, settings.receipt_secret) == bytes(stored_lookup_hash)
    witness = reader.witness_key(normalized)
    assert witness.public_key_file_bytes == bytes(stored_witness_key)
    assert reader.parse_public_key_file(bytes(stored_witness_key)) == (1, witness.public_key)

    # The organizer's wrap names the organizer's key, in the representations of section 13.
    key = reader.open_private_key_file(key_text, organizer.passphrase)
    wraps = _query(database_url, "SELECT report_id, key_id, blob FROM wraps")
    assert key.key_id_hex in [row[1] for row in wraps]
    for wrap_report_id, wrap_key_id, blob in wraps:
        assert wrap_report_id == stored_id
        assert bytes(blob)[2:18].hex() == wrap_key_id
    recipients = _query(
        database_url, "SELECT key_id, suite, public_key, fingerprint FROM recipient_keys"
    )
    assert key.key_id_hex in [row[0] for row in recipients]
    for recipient_key_id, suite, public_key, fingerprint in recipients:
        parsed_suite, raw = reader.parse_public_key_file(bytes(public_key))
        assert parsed_suite == suite  # found by experiment: the suite is stored as an integer
        assert reader.key_id(raw, parsed_suite).hex() == recipient_key_id
        # found by experiment: the fingerprint column holds the formatted text of section 4
        assert reader.fingerprint(raw, parsed_suite) == fingerprint


def test_filed_report_opens_with_the_command_line(
    client: Any, settings: Any, organizer: Any
) -> None:
    fields = dict(FILED, narrative="short narrative for the command line", contact="")
    submit_report(client, **fields)
    database_url = str(settings.database_url)
    (stored_id,) = _query(database_url, "SELECT id FROM reports")[0]
    report_id = str(uuid.UUID(str(stored_id)))
    if database_url.startswith("sqlite:///"):
        source = ["--sqlite", database_url.removeprefix("sqlite:///")]
    else:
        source = ["--postgres", _conninfo(database_url)]
    command = [
        sys.executable,
        "-m",
        "tests.independent.reader",
        *source,
        "--key",
        str(organizer.private_path),
        report_id,
    ]
    env = dict(os.environ, INCIDENTS_KEY_PASSPHRASE=organizer.passphrase)
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"report_id": report_id, **fields}

    env["INCIDENTS_KEY_PASSPHRASE"] = "wrong"
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "passphrase" in result.stderr
