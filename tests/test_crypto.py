"""Tests of format v1 (``incidents/crypto.py``): vectors, round trips, tampering, key files.

Only ``incidents.crypto`` is imported: no Flask app. Argon2id runs with low parameters except in
the one test that exercises the defaults.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import math
import operator
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from incidents import crypto

VECTORS_DIR = Path(__file__).resolve().parent / "vectors"
VECTORS: dict[str, Any] = json.loads((VECTORS_DIR / "format-v1.json").read_text("utf-8"))
SHARED_XWING_VECTOR = (
    Path(__file__).resolve().parents[2] / "shared" / "vectors" / "xwing-draft08-vector1.json"
)

FAST_KDF = crypto.KdfParams(memory_kib=8192, iterations=1, lanes=1)
PASSPHRASE = "tram stop cobalt nineteen"
SEALED_FIELD_NAMES = (
    "occurred_on",
    "place_detail",
    "narrative",
    "targeted_person",
    "perpetrator_description",
    "contact",
)

XWING_KEY = crypto.PrivateKey(suite=crypto.SUITE_XWING, seed=bytes(range(100, 132)))
OTHER_XWING_KEY = crypto.PrivateKey(suite=crypto.SUITE_XWING, seed=bytes(range(132, 164)))
X25519_KEY = crypto.PrivateKey(suite=crypto.SUITE_X25519, seed=bytes(range(164, 196)))
KEYS_BY_SUITE = {"xwing": XWING_KEY, "x25519": X25519_KEY}
REPORT_ID = uuid.UUID("2b0c9f0e-6a51-4f7c-b3d2-8e1f4a6c7d90")
OTHER_REPORT_ID = uuid.UUID("9d4e1a37-0c2b-4e58-a6f1-3b7c5d2e8f01")
DATA_KEY = bytes(range(32))
RECEIPT = "7H2K-QM9P-0A4R-ZX1V-T6BD-8NWC-3EFJ"


def _entries(section: str, label: str) -> pytest.MarkDecorator:
    """Parametrize over the entries of one vectors section, with readable ids."""
    return pytest.mark.parametrize(
        "entry", VECTORS[section], ids=[str(entry[label]) for entry in VECTORS[section]]
    )


def _private_key(name: str) -> crypto.PrivateKey:
    """The private key of a named entry of the vectors' ``keys`` section."""
    entry = next(key for key in VECTORS["keys"] if key["name"] == name)
    return crypto.PrivateKey(suite=entry["suite"], seed=bytes.fromhex(entry["seed"]))


def _seal(value: str = "a value", *, name: str = "place_detail") -> bytes:
    """Seal a field of the test report under the test data key."""
    return crypto.seal_field(value, data_key=DATA_KEY, report_id=REPORT_ID, name=name)


def _open(blob: bytes, *, name: str = "place_detail") -> str:
    """Open a field of the test report under the test data key."""
    return crypto.open_field(blob, data_key=DATA_KEY, report_id=REPORT_ID, name=name)


def _wrap(key: crypto.PrivateKey = XWING_KEY) -> bytes:
    """Wrap the test data key for the test report to ``key``."""
    return crypto.wrap_data_key(DATA_KEY, report_id=REPORT_ID, recipient=key.public_key())


def _unwrap(blob: bytes, key: crypto.PrivateKey = XWING_KEY) -> bytes:
    """Unwrap a wrap of the test report with ``key``."""
    return crypto.unwrap_data_key(blob, report_id=REPORT_ID, private_key=key)


def _flip(blob: bytes, index: int, mask: int = 0x01) -> bytes:
    """Return ``blob`` with the bits of ``mask`` flipped in byte ``index``."""
    return blob[:index] + bytes([blob[index] ^ mask]) + blob[index + 1 :]


def _armored_data(text: str) -> bytes:
    """The binary content of an armored file: the base64 lines after the first blank line."""
    lines = text.strip().splitlines()
    return base64.b64decode("".join(lines[lines.index("") + 1 : -1]))


def _rearmor(text: str, change: Callable[[bytes], bytes]) -> str:
    """Apply ``change`` to the binary content of an armored file, keeping its lines around it."""
    lines = text.strip().splitlines()
    blank = lines.index("")
    data = change(_armored_data(text))
    encoded = base64.b64encode(data).decode("ascii")
    body = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    return "\n".join([*lines[: blank + 1], *body, lines[-1]]) + "\n"


@pytest.fixture(scope="module")
def key_file() -> str:
    """An armored private key file of XWING_KEY under PASSPHRASE, with fast KDF parameters."""
    return crypto.encrypt_private_key(XWING_KEY, passphrase=PASSPHRASE, kdf=FAST_KDF)


# --------------------------------------------------------------------------- vectors


def test_platform_supports_mlkem() -> None:
    crypto.ensure_platform_support()


def test_vectors_file_has_every_section() -> None:
    sections = ["xwing_draft", "keys", "padme", "padding", "sealed_fields", "wraps"]
    sections += ["receipts", "private_key_files", "seed_backups"]
    assert all(VECTORS[section] for section in sections)
    assert VECTORS["format_version"] == crypto.FORMAT_VERSION


@_entries("xwing_draft", "source")
def test_xwing_draft_vector_seed_expands_to_its_public_key(entry: dict[str, Any]) -> None:
    key = crypto.PrivateKey(suite=crypto.SUITE_XWING, seed=bytes.fromhex(entry["seed"]))
    assert key.public_key().raw.hex() == entry["public_key"]


@pytest.mark.skipif(not SHARED_XWING_VECTOR.exists(), reason="shared/ is not beside the repo")
def test_xwing_draft_vector_copy_matches_the_shared_file() -> None:
    shared = json.loads(SHARED_XWING_VECTOR.read_text("utf-8"))
    copy = VECTORS["xwing_draft"][0]
    assert (copy["seed"], copy["public_key"]) == (shared["seed"], shared["public_key"])


@_entries("keys", "name")
def test_vector_seed_derives_public_key_key_id_and_fingerprint(entry: dict[str, Any]) -> None:
    public = _private_key(entry["name"]).public_key()
    assert public.suite == entry["suite"]
    assert public.raw.hex() == entry["public_key"]
    assert public.to_bytes().hex() == entry["public_key_bytes"]
    assert public.key_id_hex == entry["key_id"]
    assert public.fingerprint == entry["fingerprint"]


@_entries("keys", "name")
def test_vector_public_key_armor_is_reproduced(entry: dict[str, Any]) -> None:
    public = _private_key(entry["name"]).public_key()
    assert public.to_armor() == entry["public_key_armor"]
    assert crypto.PublicKey.from_armor(entry["public_key_armor"]) == public


def test_vector_padme_lengths() -> None:
    for entry in VECTORS["padme"]:
        assert crypto.padme_length(entry["length"]) == entry["padded"], entry


def test_vector_padding_is_reproduced_and_inverted() -> None:
    for entry in VECTORS["padding"]:
        value, padded = bytes.fromhex(entry["value"]), bytes.fromhex(entry["padded"])
        assert crypto.pad(value, floor=entry["floor"]) == padded
        assert crypto.unpad(padded) == value


@_entries("sealed_fields", "name")
def test_vector_sealed_field_is_reproduced_exactly(entry: dict[str, Any]) -> None:
    report_id, data_key = uuid.UUID(entry["report_id"]), bytes.fromhex(entry["data_key"])
    blob = crypto.seal_field(
        entry["value"],
        data_key=data_key,
        report_id=report_id,
        name=entry["name"],
        nonce=bytes.fromhex(entry["nonce"]),
    )
    assert crypto.field_floor(entry["name"]) == entry["floor"]
    assert crypto.field_aad(report_id=report_id, name=entry["name"]).hex() == entry["aad"]
    assert len(blob) == 2 + 12 + entry["padded_length"] + 16
    assert blob.hex() == entry["blob"]


@_entries("sealed_fields", "name")
def test_vector_sealed_field_opens_to_its_value(entry: dict[str, Any]) -> None:
    value = crypto.open_field(
        bytes.fromhex(entry["blob"]),
        data_key=bytes.fromhex(entry["data_key"]),
        report_id=uuid.UUID(entry["report_id"]),
        name=entry["name"],
    )
    assert value == entry["value"]


@_entries("wraps", "recipient")
def test_vector_wrap_opens_to_its_data_key(entry: dict[str, Any]) -> None:
    key, report_id = _private_key(entry["recipient"]), uuid.UUID(entry["report_id"])
    blob = bytes.fromhex(entry["blob"])
    assert crypto.wrap_info(report_id=report_id, key_id=key.key_id).hex() == entry["info"]
    assert crypto.wrap_key_id(blob).hex() == entry["recipient_key_id"] == key.key_id.hex()
    assert blob[1] == entry["suite"]
    data_key = crypto.unwrap_data_key(blob, report_id=report_id, private_key=key)
    assert data_key.hex() == entry["data_key"]


def test_vector_wraps_and_sealed_fields_form_an_openable_report() -> None:
    wrap = VECTORS["wraps"][0]
    fields = {entry["name"]: bytes.fromhex(entry["blob"]) for entry in VECTORS["sealed_fields"]}
    opened = crypto.open_report(
        fields,
        report_id=uuid.UUID(wrap["report_id"]),
        wrap=bytes.fromhex(wrap["blob"]),
        private_key=_private_key(wrap["recipient"]),
    )
    assert opened == {entry["name"]: entry["value"] for entry in VECTORS["sealed_fields"]}


@_entries("receipts", "normalized")
def test_vector_receipt_derivations(entry: dict[str, Any]) -> None:
    assert crypto.normalize_receipt(entry["typed"]) == entry["normalized"]
    assert crypto.format_receipt(entry["normalized"]) == entry["formatted"]
    secrets = crypto.derive_witness_secrets(entry["typed"])
    assert secrets.lookup_token.hex() == entry["lookup_token"]
    assert secrets.witness_key.seed.hex() == entry["witness_seed"]
    assert secrets.witness_key.key_id.hex() == entry["witness_public_key_id"]
    lookup = crypto.lookup_hash(secrets.lookup_token, secret=bytes.fromhex(entry["server_secret"]))
    assert lookup.hex() == entry["lookup_hash"]


@_entries("private_key_files", "key")
def test_vector_private_key_file_opens_to_its_seed(entry: dict[str, Any]) -> None:
    assert entry["passphrase"].encode("utf-8").hex() == entry["passphrase_utf8"]
    info = crypto.inspect_private_key_file(entry["armor"])
    assert info.kdf == crypto.KdfParams(**entry["kdf"])
    assert (info.suite, info.key_id.hex()) == (entry["suite"], entry["key_id"])
    key = crypto.decrypt_private_key(entry["armor"], passphrase=entry["passphrase"])
    assert key == _private_key(entry["key"])
    assert key.seed.hex() == entry["seed"]


@_entries("seed_backups", "key")
def test_vector_seed_backup_shares_combine_to_the_seed(entry: dict[str, Any]) -> None:
    key = crypto.combine_seed(entry["shares"][:3], suite=entry["suite"])
    assert key.seed.hex() == entry["seed"]


# --------------------------------------------------------------------------- padding


@given(value=st.binary(max_size=10_000), floor=st.sampled_from([0, 256, 4096]))
def test_unpad_inverts_pad(value: bytes, floor: int) -> None:
    assert crypto.unpad(crypto.pad(value, floor=floor)) == value


@given(value=st.binary(max_size=10_000), floor=st.sampled_from([0, 256, 4096]))
def test_pad_reaches_floor_or_padme_bucket(value: bytes, floor: int) -> None:
    padded = crypto.pad(value, floor=floor)
    assert len(padded) == max(floor, crypto.padme_length(4 + len(value)))


@given(length=st.integers(min_value=0, max_value=1 << 30))
def test_padme_is_monotonic_and_never_shrinks(length: int) -> None:
    assert crypto.padme_length(length) >= length
    assert crypto.padme_length(length + 1) >= crypto.padme_length(length)


@given(length=st.integers(min_value=1, max_value=1 << 30))
def test_padme_overhead_is_at_most_12_percent(length: int) -> None:
    assert crypto.padme_length(length) <= length * 1.12


def test_padme_overhead_bound_holds_for_every_length_up_to_64_kib() -> None:
    worst = max((crypto.padme_length(n) - n) / n for n in range(1, 1 << 16))
    assert worst < 0.12


@given(length=st.integers(min_value=2, max_value=1 << 40))
def test_padme_keeps_only_loglog_significant_bits(length: int) -> None:
    padded = crypto.padme_length(length)
    significant = padded.bit_length() - (padded & -padded).bit_length() + 1
    exponent = length.bit_length() - 1
    assert significant <= exponent.bit_length() + 1


def test_unpad_rejects_nonzero_padding() -> None:
    padded = crypto.pad(b"abc", floor=16)
    with pytest.raises(crypto.FormatError):
        crypto.unpad(padded[:-1] + b"\x01")


def test_unpad_rejects_length_beyond_the_value() -> None:
    with pytest.raises(crypto.FormatError):
        crypto.unpad(b"\x00\x00\x00\x09abc")


def test_unpad_rejects_value_shorter_than_its_prefix() -> None:
    with pytest.raises(crypto.FormatError):
        crypto.unpad(b"\x00\x00")


def test_values_in_the_same_bucket_seal_to_equal_lengths() -> None:
    shorter, longer = "s" * 1000, "l" * 1010  # 4 + len pads to 1024 for both
    assert len(_seal(shorter)) == len(_seal(longer))


def test_values_in_different_buckets_seal_to_different_lengths() -> None:
    assert len(_seal("s" * 1000)) < len(_seal("l" * 1030))


@given(value=st.text(max_size=252 // 4))
def test_short_field_floor_hides_lengths_under_253_bytes(value: str) -> None:
    assert len(_seal(value)) == len(_seal(""))


def test_narrative_floor_hides_every_length_under_4_kib() -> None:
    empty = _seal("", name="narrative")
    for value in ("x", "Меня преследовали" * 10, "y" * 4092):
        assert len(_seal(value, name="narrative")) == len(empty) == 2 + 12 + 4096 + 16


# --------------------------------------------------------------------------- sealed fields


@settings(max_examples=200)
@given(
    value=st.text(),
    name=st.text(),
    report_id=st.uuids(),
    data_key=st.binary(min_size=32, max_size=32),
)
def test_sealed_field_round_trips_any_text_and_name(
    value: str, name: str, report_id: uuid.UUID, data_key: bytes
) -> None:
    blob = crypto.seal_field(value, data_key=data_key, report_id=report_id, name=name)
    assert crypto.open_field(blob, data_key=data_key, report_id=report_id, name=name) == value


def test_sealed_field_starts_with_version_suite_and_nonce() -> None:
    nonce = bytes(range(12))
    blob = crypto.seal_field(
        "v", data_key=DATA_KEY, report_id=REPORT_ID, name="contact", nonce=nonce
    )
    assert blob[:14] == bytes([crypto.FORMAT_VERSION, crypto.FIELD_SUITE_AES256GCM]) + nonce


def test_sealing_twice_uses_fresh_nonces() -> None:
    first, second = _seal("same value"), _seal("same value")
    assert first[2:14] != second[2:14]
    assert first != second


def test_sealed_field_does_not_contain_the_plaintext() -> None:
    phrase = "unique-phrase-QX7 черный фургон у подъезда"
    blob = _seal(phrase, name="narrative")
    for encoded in (phrase.encode("utf-8"), phrase.encode("utf-16-le"), b"unique-phrase"):
        assert encoded not in blob


def test_sealed_report_does_not_contain_the_plaintext() -> None:
    phrase = "unique-phrase-ZK4 followed from the embassy"
    sealed = crypto.seal_report(
        {name: phrase for name in SEALED_FIELD_NAMES},
        report_id=REPORT_ID,
        recipients=[XWING_KEY.public_key()],
    )
    everything = b"".join([*sealed.fields.values(), *sealed.wraps.values()])
    assert phrase.encode("utf-8") not in everything


def test_open_field_with_flipped_byte_raises() -> None:
    blob = _seal("the exact words")
    for index in range(len(blob)):
        expected = crypto.FormatError if index < 2 else crypto.DecryptionError
        with pytest.raises(expected):
            _open(_flip(blob, index))


def test_open_truncated_field_raises() -> None:
    blob = _seal("the exact words")
    for length in range(len(blob)):
        expected = crypto.FormatError if length < 2 + 12 + 16 else crypto.DecryptionError
        with pytest.raises(expected):
            _open(blob[:length])


def test_open_extended_field_raises() -> None:
    with pytest.raises(crypto.DecryptionError):
        _open(_seal() + b"\x00")


def test_open_field_with_wrong_report_id_raises() -> None:
    blob = _seal()
    with pytest.raises(crypto.DecryptionError):
        crypto.open_field(blob, data_key=DATA_KEY, report_id=OTHER_REPORT_ID, name="place_detail")


def test_open_field_under_another_field_name_raises() -> None:
    with pytest.raises(crypto.DecryptionError):
        _open(_seal(name="place_detail"), name="contact")


def test_open_field_with_wrong_data_key_raises() -> None:
    blob = _seal()
    with pytest.raises(crypto.DecryptionError):
        crypto.open_field(blob, data_key=bytes(32), report_id=REPORT_ID, name="place_detail")


def test_open_field_with_unknown_version_raises() -> None:
    blob = _seal()
    with pytest.raises(crypto.FormatError, match="version"):
        _open(bytes([2]) + blob[1:])


def test_open_field_with_unknown_suite_raises() -> None:
    blob = _seal()
    with pytest.raises(crypto.FormatError, match="suite"):
        _open(blob[:1] + bytes([2]) + blob[2:])


def test_open_field_with_non_utf8_content_raises() -> None:
    blob = crypto.seal_bytes(
        b"\xff\xfe", data_key=DATA_KEY, report_id=REPORT_ID, name="place_detail", floor=256
    )
    with pytest.raises(crypto.FormatError):
        _open(blob)


def test_seal_field_rejects_wrong_length_data_key_or_nonce() -> None:
    with pytest.raises(crypto.CryptoError):
        crypto.seal_field("v", data_key=bytes(16), report_id=REPORT_ID, name="contact")
    with pytest.raises(crypto.CryptoError):
        crypto.seal_field("v", data_key=DATA_KEY, report_id=REPORT_ID, name="contact", nonce=b"1")


def test_new_data_keys_are_32_random_bytes() -> None:
    keys = {crypto.new_data_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(key) == 32 for key in keys)


# --------------------------------------------------------------------------- wraps


@pytest.mark.parametrize("key", KEYS_BY_SUITE.values(), ids=KEYS_BY_SUITE.keys())
@settings(max_examples=25)
@given(data_key=st.binary(min_size=32, max_size=32), report_id=st.uuids())
def test_wrap_round_trips(key: crypto.PrivateKey, data_key: bytes, report_id: uuid.UUID) -> None:
    blob = crypto.wrap_data_key(data_key, report_id=report_id, recipient=key.public_key())
    assert crypto.unwrap_data_key(blob, report_id=report_id, private_key=key) == data_key


@pytest.mark.parametrize(
    ("key", "length"), [(XWING_KEY, 1186), (X25519_KEY, 98)], ids=KEYS_BY_SUITE.keys()
)
def test_wrap_has_header_key_id_and_specified_length(key: crypto.PrivateKey, length: int) -> None:
    blob = _wrap(key)
    assert len(blob) == length
    assert blob[:2] == bytes([crypto.FORMAT_VERSION, key.suite])
    assert crypto.wrap_key_id(blob) == key.key_id


def test_wraps_of_the_same_key_differ_each_time() -> None:
    assert _wrap() != _wrap()


def test_unwrap_with_another_key_raises() -> None:
    with pytest.raises(crypto.DecryptionError):
        _unwrap(_wrap(XWING_KEY), OTHER_XWING_KEY)


def test_unwrap_with_a_key_of_another_suite_raises() -> None:
    with pytest.raises(crypto.DecryptionError):
        _unwrap(_wrap(XWING_KEY), X25519_KEY)


def test_unwrap_wrap_relabelled_for_another_key_raises() -> None:
    blob = _wrap(XWING_KEY)
    relabelled = blob[:2] + OTHER_XWING_KEY.key_id + blob[18:]
    with pytest.raises(crypto.DecryptionError):
        _unwrap(relabelled, OTHER_XWING_KEY)


@pytest.mark.parametrize("key", KEYS_BY_SUITE.values(), ids=KEYS_BY_SUITE.keys())
def test_unwrap_wrap_moved_to_another_report_raises(key: crypto.PrivateKey) -> None:
    with pytest.raises(crypto.DecryptionError):
        crypto.unwrap_data_key(_wrap(key), report_id=OTHER_REPORT_ID, private_key=key)


@pytest.mark.parametrize("key", KEYS_BY_SUITE.values(), ids=KEYS_BY_SUITE.keys())
def test_unwrap_tampered_wrap_raises(key: crypto.PrivateKey) -> None:
    blob = _wrap(key)
    for index in range(len(blob)):
        expected = crypto.FormatError if index < 2 else crypto.DecryptionError
        with pytest.raises(expected):
            _unwrap(_flip(blob, index), key)


def test_unwrap_with_suite_byte_swapped_to_the_other_suite_raises() -> None:
    blob = _wrap(XWING_KEY)
    with pytest.raises(crypto.DecryptionError):
        _unwrap(_flip(blob, 1, mask=crypto.SUITE_XWING ^ crypto.SUITE_X25519))


@pytest.mark.parametrize("key", KEYS_BY_SUITE.values(), ids=KEYS_BY_SUITE.keys())
def test_unwrap_truncated_wrap_raises(key: crypto.PrivateKey) -> None:
    blob = _wrap(key)
    for length in [*range(0, 40), len(blob) // 2, len(blob) - 1]:
        with pytest.raises((crypto.FormatError, crypto.DecryptionError)):
            _unwrap(blob[:length], key)


def test_unwrap_with_unknown_version_raises() -> None:
    blob = _wrap()
    with pytest.raises(crypto.FormatError, match="version"):
        _unwrap(bytes([0]) + blob[1:])


def test_unwrap_with_unknown_suite_raises() -> None:
    blob = _wrap()
    with pytest.raises(crypto.FormatError, match="suite"):
        _unwrap(blob[:1] + bytes([0x7F]) + blob[2:])


def test_wrap_key_id_of_truncated_wrap_raises() -> None:
    with pytest.raises(crypto.FormatError):
        crypto.wrap_key_id(_wrap()[:10])


def test_open_report_with_each_recipient_returns_the_values() -> None:
    values = {name: f"value of {name}" for name in SEALED_FIELD_NAMES}
    recipients = [XWING_KEY, X25519_KEY]
    sealed = crypto.seal_report(
        values, report_id=REPORT_ID, recipients=[key.public_key() for key in recipients]
    )
    assert set(sealed.wraps) == {key.key_id for key in recipients}
    for key in recipients:
        opened = crypto.open_report(
            sealed.fields, report_id=REPORT_ID, wrap=sealed.wraps[key.key_id], private_key=key
        )
        assert opened == values


def test_seal_report_without_recipients_raises() -> None:
    with pytest.raises(crypto.CryptoError):
        crypto.seal_report({"contact": "x"}, report_id=REPORT_ID, recipients=[])


# --------------------------------------------------------------------------- public keys


@pytest.mark.parametrize("key", KEYS_BY_SUITE.values(), ids=KEYS_BY_SUITE.keys())
def test_public_key_armor_round_trips(key: crypto.PrivateKey) -> None:
    public = key.public_key()
    assert crypto.PublicKey.from_armor(public.to_armor()) == public
    assert crypto.PublicKey.from_bytes(public.to_bytes()) == public


def test_public_key_armor_accepts_crlf_line_endings() -> None:
    armor = XWING_KEY.public_key().to_armor().replace("\n", "\r\n")
    assert crypto.PublicKey.from_armor(armor) == XWING_KEY.public_key()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "-----BEGIN INCIDENTS PUBLIC KEY-----\n\n!!!!\n-----END INCIDENTS PUBLIC KEY-----\n",
        "-----BEGIN INCIDENTS PUBLIC KEY-----\nSVJQSw==\n-----END INCIDENTS PUBLIC KEY-----\n",
        "-----BEGIN INCIDENTS PUBLIC KEY-----\n\nSVJQSw==\n-----END INCIDENTS PUBLIC KEY-----\n",
        "-----BEGIN INCIDENTS PUBLIC KEY-----\n\nAAAA\n-----END INCIDENTS PUBLIC KEY-----\n",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n",
    ],
    ids=["empty", "text", "bad-base64", "no-blank-line", "magic-only", "no-magic", "pgp"],
)
def test_public_key_armor_rejects_garbage(text: str) -> None:
    with pytest.raises(crypto.FormatError):
        crypto.PublicKey.from_armor(text)


def test_public_key_armor_rejects_truncated_data() -> None:
    armor = _rearmor(XWING_KEY.public_key().to_armor(), lambda data: data[:-1])
    with pytest.raises(crypto.FormatError):
        crypto.PublicKey.from_armor(armor)


def test_public_key_with_unknown_version_or_suite_raises() -> None:
    data = XWING_KEY.public_key().to_bytes()
    with pytest.raises(crypto.FormatError, match="version"):
        crypto.PublicKey.from_bytes(data[:4] + bytes([9]) + data[5:])
    with pytest.raises(crypto.FormatError, match="suite"):
        crypto.PublicKey.from_bytes(data[:5] + bytes([9]) + data[6:])


def test_public_key_with_invalid_mlkem_bytes_raises() -> None:
    with pytest.raises(crypto.FormatError):
        crypto.PublicKey(suite=crypto.SUITE_XWING, raw=b"\xff" * 1216)


def test_public_key_of_wrong_length_for_its_suite_raises() -> None:
    with pytest.raises(crypto.FormatError):
        crypto.PublicKey(suite=crypto.SUITE_X25519, raw=XWING_KEY.public_key().raw)


def test_public_key_derivation_is_deterministic() -> None:
    copy = crypto.PrivateKey(suite=crypto.SUITE_XWING, seed=XWING_KEY.seed)
    assert copy.public_key() == XWING_KEY.public_key()
    assert copy.public_key() != OTHER_XWING_KEY.public_key()


def test_xwing_public_key_is_mlkem_then_x25519_public_key() -> None:
    raw = XWING_KEY.public_key().raw
    assert len(raw) == crypto.MLKEM768_PUBLIC_LENGTH + crypto.X25519_PUBLIC_LENGTH == 1216


def test_key_id_depends_on_suite_and_public_key() -> None:
    ids = {XWING_KEY.key_id, OTHER_XWING_KEY.key_id, X25519_KEY.key_id}
    assert len(ids) == 3
    assert all(len(key_id) == 16 for key_id in ids)


def test_fingerprint_is_40_uppercase_hex_digits_in_groups_of_4() -> None:
    public = XWING_KEY.public_key()
    groups = public.fingerprint.split(" ")
    assert len(groups) == 10
    assert all(len(group) == 4 and set(group) <= set("0123456789ABCDEF") for group in groups)
    assert "".join(groups).lower()[:32] != public.key_id_hex


def test_private_key_repr_does_not_show_the_seed() -> None:
    assert XWING_KEY.seed.hex() not in repr(XWING_KEY)
    assert "seed" not in repr(XWING_KEY)


def test_private_key_with_wrong_seed_length_or_suite_raises() -> None:
    with pytest.raises(crypto.FormatError):
        crypto.PrivateKey(suite=crypto.SUITE_XWING, seed=bytes(31))
    with pytest.raises(crypto.FormatError):
        crypto.PrivateKey(suite=9, seed=bytes(32))


def test_generated_keys_differ() -> None:
    assert crypto.PrivateKey.generate().key_id != crypto.PrivateKey.generate().key_id


# --------------------------------------------------------------------------- key ids


def test_parse_key_id_accepts_hex_with_separators_and_any_case() -> None:
    key_id = XWING_KEY.key_id
    hex_id = key_id.hex()
    grouped = " ".join(hex_id[i : i + 4] for i in range(0, 32, 4)).upper()
    coloned = ":".join(hex_id[i : i + 2] for i in range(0, 32, 2))
    for text in (hex_id, hex_id.upper(), grouped, coloned, f"  {hex_id}-"):
        assert crypto.parse_key_id(text) == key_id


@pytest.mark.parametrize(
    "text",
    ["", "abc", "0" * 31, "0" * 34, "g" * 32, "0x" + "0" * 30],
    ids=["empty", "short", "odd", "long", "not-hex", "0x-prefix"],
)
def test_parse_key_id_rejects_anything_but_32_hex_digits(text: str) -> None:
    with pytest.raises(crypto.FormatError):
        crypto.parse_key_id(text)


# --------------------------------------------------------------------------- private key files


def test_private_key_file_round_trips(key_file: str) -> None:
    assert crypto.decrypt_private_key(key_file, passphrase=PASSPHRASE) == XWING_KEY


def test_private_key_file_round_trips_for_x25519_keys() -> None:
    text = crypto.encrypt_private_key(X25519_KEY, passphrase=PASSPHRASE, kdf=FAST_KDF)
    assert crypto.decrypt_private_key(text, passphrase=PASSPHRASE) == X25519_KEY


def test_private_key_file_round_trips_at_default_parameters() -> None:
    text = crypto.encrypt_private_key(X25519_KEY, passphrase=PASSPHRASE)
    assert crypto.inspect_private_key_file(text).kdf == crypto.KdfParams(
        iterations=3, memory_kib=256 * 1024, lanes=4
    )
    assert crypto.decrypt_private_key(text, passphrase=PASSPHRASE) == X25519_KEY


def test_private_key_file_is_sealed_with_fresh_salt_and_nonce(key_file: str) -> None:
    again = crypto.encrypt_private_key(XWING_KEY, passphrase=PASSPHRASE, kdf=FAST_KDF)
    assert again != key_file


def test_private_key_file_with_wrong_passphrase_raises(key_file: str) -> None:
    with pytest.raises(crypto.WrongPassphraseError):
        crypto.decrypt_private_key(key_file, passphrase=PASSPHRASE + " ")


def test_private_key_file_does_not_contain_the_seed(key_file: str) -> None:
    assert XWING_KEY.seed not in _armored_data(key_file)
    assert XWING_KEY.seed.hex() not in key_file


def test_private_key_file_with_raised_memory_parameter_raises(key_file: str) -> None:
    def double_memory(data: bytes) -> bytes:
        return data[:11] + (2 * FAST_KDF.memory_kib).to_bytes(4, "big") + data[15:]

    tampered = _rearmor(key_file, double_memory)
    assert crypto.inspect_private_key_file(tampered).kdf.memory_kib == 2 * FAST_KDF.memory_kib
    with pytest.raises(crypto.WrongPassphraseError):
        crypto.decrypt_private_key(tampered, passphrase=PASSPHRASE)


def test_private_key_file_with_any_header_byte_changed_raises(key_file: str) -> None:
    for index in range(63):
        tampered = _rearmor(key_file, functools.partial(_flip, index=index))
        with pytest.raises((crypto.WrongPassphraseError, crypto.FormatError)):
            crypto.decrypt_private_key(tampered, passphrase=PASSPHRASE)


def test_private_key_file_with_tampered_sealed_seed_raises(key_file: str) -> None:
    tampered = _rearmor(key_file, lambda data: _flip(data, 70))
    with pytest.raises(crypto.WrongPassphraseError):
        crypto.decrypt_private_key(tampered, passphrase=PASSPHRASE)


def test_private_key_file_truncated_in_its_header_raises(key_file: str) -> None:
    tampered = _rearmor(key_file, lambda data: data[:60])
    with pytest.raises(crypto.FormatError):
        crypto.decrypt_private_key(tampered, passphrase=PASSPHRASE)


def test_private_key_file_truncated_in_its_sealed_seed_raises(key_file: str) -> None:
    for cut in (1, 16, 20, 32):
        tampered = _rearmor(key_file, operator.itemgetter(slice(None, -cut)))
        with pytest.raises(crypto.FormatError):
            crypto.decrypt_private_key(tampered, passphrase=PASSPHRASE)


def test_private_key_file_with_trailing_data_raises(key_file: str) -> None:
    tampered = _rearmor(key_file, lambda data: data + b"\x00")
    with pytest.raises(crypto.FormatError):
        crypto.decrypt_private_key(tampered, passphrase=PASSPHRASE)


def test_passphrase_is_compared_in_nfc_form() -> None:
    composed, decomposed = "jeż ёлка passphrase", "jez\u0307 е\u0308лка passphrase"
    assert composed != decomposed
    text = crypto.encrypt_private_key(XWING_KEY, passphrase=composed, kdf=FAST_KDF)
    assert crypto.decrypt_private_key(text, passphrase=decomposed) == XWING_KEY


@pytest.mark.parametrize(
    "text",
    [
        "",
        "my passphrase is hunter2",
        "-----BEGIN INCIDENTS PRIVATE KEY-----\n\n%%%%\n-----END INCIDENTS PRIVATE KEY-----\n",
        "-----BEGIN INCIDENTS PRIVATE KEY-----\n\n" + "A" * 148 + "\n"
        "-----END INCIDENTS PRIVATE KEY-----\n",
        "-----BEGIN OPENSSH PRIVATE KEY-----\n\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    ],
    ids=["empty", "text", "bad-base64", "zeros", "openssh"],
)
def test_non_key_text_is_not_a_private_key_file(text: str) -> None:
    with pytest.raises(crypto.FormatError):
        crypto.decrypt_private_key(text, passphrase=PASSPHRASE)


def test_public_key_file_is_not_a_private_key_file() -> None:
    with pytest.raises(crypto.FormatError):
        crypto.decrypt_private_key(XWING_KEY.public_key().to_armor(), passphrase=PASSPHRASE)


def test_private_key_file_is_not_a_public_key_file(key_file: str) -> None:
    with pytest.raises(crypto.FormatError):
        crypto.PublicKey.from_armor(key_file)


def test_inspect_private_key_file_reveals_suite_key_id_and_kdf_only(key_file: str) -> None:
    info = crypto.inspect_private_key_file(key_file)
    assert (info.suite, info.key_id, info.kdf) == (crypto.SUITE_XWING, XWING_KEY.key_id, FAST_KDF)


@pytest.mark.parametrize(
    "params",
    [
        {"iterations": 0},
        {"iterations": 101},
        {"lanes": 0},
        {"lanes": 65},
        {"memory_kib": 7, "lanes": 1},
        {"memory_kib": 4 * 1024 * 1024 + 1},
    ],
    ids=["t0", "t101", "p0", "p65", "m-below-8p", "m-above-4gib"],
)
def test_kdf_parameters_out_of_range_raise(params: dict[str, int]) -> None:
    with pytest.raises(crypto.FormatError):
        crypto.KdfParams(**params)


# --------------------------------------------------------------------------- receipts


def test_new_receipt_is_seven_groups_of_four() -> None:
    groups = crypto.new_receipt().split("-")
    assert len(groups) == 7
    assert all(len(group) == 4 for group in groups)


def test_new_receipt_carries_at_least_128_bits() -> None:
    receipt = crypto.normalize_receipt(crypto.new_receipt())
    alphabet = set(crypto.CROCKFORD_ALPHABET)
    assert len(alphabet) == 32
    assert set(receipt) <= alphabet
    assert len(receipt) * math.log2(len(alphabet)) >= 128


def test_new_receipts_differ() -> None:
    receipts = {crypto.new_receipt() for _ in range(200)}
    assert len(receipts) == 200


def test_new_receipt_is_already_normalized() -> None:
    receipt = crypto.new_receipt()
    assert crypto.format_receipt(crypto.normalize_receipt(receipt)) == receipt


def test_normalize_receipt_accepts_lowercase_spaces_and_missing_dashes() -> None:
    canonical = RECEIPT.replace("-", "")
    for typed in (
        RECEIPT.lower(),
        canonical,
        RECEIPT.replace("-", " "),
        f"  {RECEIPT}\n",
        RECEIPT.replace("-", "_"),
        RECEIPT.replace("-", "."),
        "7h2kqm9p 0a4r zx1v\tt6bd-8nwc-3efj",
    ):
        assert crypto.normalize_receipt(typed) == canonical, typed


def test_normalize_receipt_accepts_cyrillic_lookalikes_and_unicode_spaces() -> None:
    canonical = "ABEKMHPCTX3Y0123456789ABEKMH"
    typed = "АВЕК МНРС\u00a0ТХЗУ-О123\u2013456789 авек мн"
    assert crypto.normalize_receipt(typed) == canonical


def test_normalize_receipt_maps_confusable_letters() -> None:
    typed = "7H2K-QM9P-OA4R-ZXIU-T6BD-8NWC-3EFJ"
    assert crypto.normalize_receipt(typed) == RECEIPT.replace("-", "")
    assert crypto.normalize_receipt(typed.replace("I", "l")) == RECEIPT.replace("-", "")


@pytest.mark.parametrize(
    "typed",
    ["", RECEIPT[:-1], RECEIPT + "A", RECEIPT.replace("-", "")[:27], RECEIPT + RECEIPT],
    ids=["empty", "one-short", "one-long", "27-symbols", "doubled"],
)
def test_normalize_receipt_rejects_wrong_length(typed: str) -> None:
    with pytest.raises(crypto.ReceiptError):
        crypto.normalize_receipt(typed)


@pytest.mark.parametrize(
    "typed",
    [
        RECEIPT[:-1] + "*",
        RECEIPT[:-1] + "Ж",
        RECEIPT.replace("-", "/"),
        RECEIPT[:-1] + "é",
        "ı" * 28,
    ],
    ids=["symbol", "cyrillic", "slashes", "accented", "dotless-i"],
)
def test_normalize_receipt_rejects_foreign_characters(typed: str) -> None:
    with pytest.raises(crypto.ReceiptError):
        crypto.normalize_receipt(typed)


@given(symbols=st.text(alphabet=crypto.CROCKFORD_ALPHABET, min_size=28, max_size=28))
def test_normalize_receipt_is_idempotent(symbols: str) -> None:
    normalized = crypto.normalize_receipt(crypto.format_receipt(symbols))
    assert normalized == symbols
    assert crypto.normalize_receipt(normalized) == normalized


def test_witness_secrets_separate_lookup_token_from_witness_seed() -> None:
    secrets = crypto.derive_witness_secrets(RECEIPT)
    assert secrets.lookup_token != secrets.witness_key.seed
    assert secrets.witness_key.suite == crypto.SUITE_XWING


def test_witness_secrets_are_deterministic_per_receipt() -> None:
    first = crypto.derive_witness_secrets(RECEIPT)
    typed = crypto.derive_witness_secrets(RECEIPT.lower().replace("-", " ").replace("0", "o"))
    assert typed == first


def test_witness_secrets_differ_between_receipts() -> None:
    first = crypto.derive_witness_secrets(RECEIPT)
    other = crypto.derive_witness_secrets(RECEIPT[:-1] + "K")
    assert other.lookup_token != first.lookup_token
    assert other.witness_key.seed != first.witness_key.seed


def test_witness_secrets_repr_hides_the_secrets() -> None:
    secrets = crypto.derive_witness_secrets(RECEIPT)
    assert secrets.lookup_token.hex() not in repr(secrets)
    assert "lookup_token" not in repr(secrets)


def test_derive_witness_secrets_rejects_a_non_receipt() -> None:
    with pytest.raises(crypto.ReceiptError):
        crypto.derive_witness_secrets("not a receipt")


def test_lookup_hash_depends_on_the_server_secret() -> None:
    token = crypto.derive_witness_secrets(RECEIPT).lookup_token
    first = crypto.lookup_hash(token, secret=b"a" * 32)
    assert first == crypto.lookup_hash(token, secret=b"a" * 32)
    assert first != crypto.lookup_hash(token, secret=b"b" * 32)
    assert first != token
    assert len(first) == 32


# --------------------------------------------------------------------------- seed backups


@pytest.fixture(scope="module")
def shares() -> list[str]:
    """Five SLIP-39 shares of XWING_KEY's seed, threshold 3."""
    return crypto.split_seed(XWING_KEY)


def test_split_seed_makes_five_shares_of_33_words(shares: list[str]) -> None:
    assert len(shares) == 5
    assert all(len(share.split()) == 33 for share in shares)


def test_any_three_of_five_shares_restore_the_seed(shares: list[str]) -> None:
    for chosen in itertools.combinations(shares, 3):
        assert crypto.combine_seed(chosen) == XWING_KEY


def test_more_shares_than_the_threshold_restore_the_seed(shares: list[str]) -> None:
    for chosen in (shares[1:], shares, [*shares[2:], shares[0]]):
        assert crypto.combine_seed(chosen) == XWING_KEY


def test_shares_with_extra_whitespace_and_capitals_restore_the_seed(shares: list[str]) -> None:
    typed = ["  " + share.upper().replace(" ", "   ") + "\n" for share in shares[:3]]
    assert crypto.combine_seed(typed) == XWING_KEY


def test_two_shares_do_not_restore_the_seed(shares: list[str]) -> None:
    for chosen in itertools.combinations(shares, 2):
        with pytest.raises(crypto.FormatError):
            crypto.combine_seed(chosen)


def test_repeated_share_does_not_count_twice(shares: list[str]) -> None:
    with pytest.raises(crypto.FormatError):
        crypto.combine_seed([shares[0], shares[0], shares[1]])


def test_garbled_share_raises(shares: list[str]) -> None:
    words = shares[0].split()
    garbled = " ".join([*words[:-1], "academic" if words[-1] != "academic" else "acid"])
    with pytest.raises(crypto.FormatError):
        crypto.combine_seed([garbled, shares[1], shares[2]])


def test_combine_seed_restores_the_suite_it_is_told() -> None:
    x25519_shares = crypto.split_seed(X25519_KEY)
    key = crypto.combine_seed(x25519_shares[:3], suite=crypto.SUITE_X25519)
    assert key == X25519_KEY
