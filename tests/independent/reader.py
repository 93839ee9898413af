"""An independent reader of the incident register's format v1.

This module was written **only from docs/format.md** (and checked against the test vectors
``tests/vectors/format-v1.json`` that the document describes). It does not import, and was
written without reading, the register's own code (``incidents``): its purpose is to show that
the document alone is enough to open a stored report.

Dependencies: the Python standard library, ``cryptography`` (as "an HPKE library with the X-Wing
KEM plus primitives"), ``sqlite3`` and, for PostgreSQL only, ``psycopg``.

Command line::

    python -m tests.independent.reader --sqlite FILE --key KEYFILE REPORT_ID
    python -m tests.independent.reader --postgres CONNINFO --key KEYFILE REPORT_ID

The passphrase of the key file is taken from ``INCIDENTS_KEY_PASSPHRASE`` or asked for. The
sealed fields of the report are printed as JSON.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import hashlib
import hmac
import json
import os
import sqlite3
import struct
import sys
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# --- section 1: conventions -----------------------------------------------------------------

FORMAT_VERSION = 0x01
SUITE_XWING = 0x01
SUITE_X25519 = 0x02
FIELD_SUITE_AES_GCM = 0x01
KDF_ARGON2ID = 0x01

LABEL_KEY_ID = b"incidents/v1/key-id"
LABEL_FINGERPRINT = b"incidents/v1/fingerprint"
LABEL_KEY_FILE = b"incidents/v1/key-file"
LABEL_FIELD = b"incidents/v1/field"
LABEL_WRAP = b"incidents/v1/wrap"
LABEL_RECEIPT = b"incidents/v1/receipt"
INFO_LOOKUP_TOKEN = b"lookup-token"
INFO_WITNESS_KEY_SEED = b"witness-key-seed"

SEED_LENGTH = 32
DATA_KEY_LENGTH = 32
NONCE_LENGTH = 12
TAG_LENGTH = 16
KEY_ID_LENGTH = 16

PUBLIC_KEY_LENGTH = {SUITE_XWING: 1216, SUITE_X25519: 32}
ENC_LENGTH = {SUITE_XWING: 1120, SUITE_X25519: 32}
MLKEM768_PUBLIC_KEY_LENGTH = 1184

# section 13: sealed columns and the field names bound into the AAD
SEALED_FIELDS = (
    "occurred_on",
    "place_detail",
    "narrative",
    "targeted_person",
    "perpetrator_description",
    "contact",
)
NARRATIVE_FLOOR = 4096
DEFAULT_FLOOR = 256


class FormatError(ValueError):
    """Malformed input: unknown version, suite, magic or length."""


class DecryptionError(ValueError):
    """Authentication failed: wrong key, wrong context or altered data."""


class WrongPassphraseError(DecryptionError):
    """A private key file did not open: wrong passphrase or altered file."""


def u32(n: int) -> bytes:
    """``n`` as 4 bytes, big-endian."""
    return struct.pack(">I", n)


def length_prefixed(*parts: bytes) -> bytes:
    """``u32(len(p1)) || p1 || u32(len(p2)) || p2 || ...``."""
    return b"".join(u32(len(part)) + part for part in parts)


def report_id_bytes(report_id: str | uuid.UUID | bytes) -> bytes:
    """The 16 RFC 9562 bytes of a report id (UUID text with or without dashes, or a UUID)."""
    if isinstance(report_id, uuid.UUID):
        return report_id.bytes
    if isinstance(report_id, bytes):
        if len(report_id) != 16:
            raise FormatError("a report id is 16 bytes")
        return report_id
    try:
        return uuid.UUID(report_id.strip()).bytes
    except ValueError as exc:
        raise FormatError(f"not a report id: {report_id!r}") from exc


# --- section 3: key pairs -------------------------------------------------------------------


def _check_seed(seed: bytes) -> None:
    if len(seed) != SEED_LENGTH:
        raise FormatError("a seed is 32 bytes")


def _check_suite(suite: int) -> None:
    if suite not in PUBLIC_KEY_LENGTH:
        raise FormatError(f"unknown key suite {suite:#04x}")


def expand_xwing_seed(seed: bytes) -> tuple[bytes, bytes]:
    """``(mlkem_seed (64 bytes), x25519_sk (32 bytes))`` = SHAKE256(seed, 96 bytes) split."""
    _check_seed(seed)
    shake = hashes.Hash(hashes.SHAKE256(96))
    shake.update(seed)
    expanded = shake.finalize()
    return expanded[0:64], expanded[64:96]


def derive_public_key(seed: bytes, suite: int = SUITE_XWING) -> bytes:
    """The raw public key of a seed: ``mlkem_pk || x25519_pk`` (X-Wing) or ``X25519(seed, 9)``."""
    _check_seed(seed)
    _check_suite(suite)
    if suite == SUITE_X25519:
        return x25519.X25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    mlkem_seed, x25519_sk = expand_xwing_seed(seed)
    mlkem_pk = mlkem.MLKEM768PrivateKey.from_seed_bytes(mlkem_seed).public_key()
    x25519_pk = x25519.X25519PrivateKey.from_private_bytes(x25519_sk).public_key()
    return mlkem_pk.public_bytes_raw() + x25519_pk.public_bytes_raw()


def hpke_suite(suite: int) -> hpke.Suite:
    """The HPKE suite named by a key/wrap suite byte (section 2)."""
    _check_suite(suite)
    kem = hpke.KEM.MLKEM768_X25519 if suite == SUITE_XWING else hpke.KEM.X25519
    return hpke.Suite(kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def hpke_private_key(
    seed: bytes, suite: int = SUITE_XWING
) -> hpke.MLKEM768X25519PrivateKey | x25519.X25519PrivateKey:
    """The private key object the HPKE library needs (expanded form for X-Wing)."""
    _check_seed(seed)
    _check_suite(suite)
    if suite == SUITE_X25519:
        return x25519.X25519PrivateKey.from_private_bytes(seed)
    mlkem_seed, x25519_sk = expand_xwing_seed(seed)
    return hpke.MLKEM768X25519PrivateKey(
        mlkem.MLKEM768PrivateKey.from_seed_bytes(mlkem_seed),
        x25519.X25519PrivateKey.from_private_bytes(x25519_sk),
    )


def hpke_public_key(
    public_key: bytes, suite: int = SUITE_XWING
) -> hpke.MLKEM768X25519PublicKey | x25519.X25519PublicKey:
    """The HPKE library's public key object for a raw public key (validates ML-KEM's part)."""
    _check_suite(suite)
    if len(public_key) != PUBLIC_KEY_LENGTH[suite]:
        raise FormatError("wrong public key length for its suite")
    if suite == SUITE_X25519:
        return x25519.X25519PublicKey.from_public_bytes(public_key)
    try:
        mlkem_pk = mlkem.MLKEM768PublicKey.from_public_bytes(
            public_key[:MLKEM768_PUBLIC_KEY_LENGTH]
        )
    except ValueError as exc:
        raise FormatError("invalid ML-KEM-768 encapsulation key") from exc
    x25519_pk = x25519.X25519PublicKey.from_public_bytes(public_key[MLKEM768_PUBLIC_KEY_LENGTH:])
    return hpke.MLKEM768X25519PublicKey(mlkem_pk, x25519_pk)


# --- section 4: key id and fingerprint ------------------------------------------------------


def key_id(public_key: bytes, suite: int = SUITE_XWING) -> bytes:
    """16-byte key id of a raw public key."""
    _check_suite(suite)
    return hashlib.sha256(length_prefixed(LABEL_KEY_ID, bytes([suite]), public_key)).digest()[:16]


def fingerprint_bytes(public_key: bytes, suite: int = SUITE_XWING) -> bytes:
    """20-byte fingerprint of a raw public key."""
    _check_suite(suite)
    digest = hashlib.sha256(length_prefixed(LABEL_FINGERPRINT, bytes([suite]), public_key))
    return digest.digest()[:20]


def format_fingerprint(fingerprint: bytes) -> str:
    """40 uppercase hex digits in 10 groups of 4 separated by single spaces."""
    text = fingerprint.hex().upper()
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def fingerprint(public_key: bytes, suite: int = SUITE_XWING) -> str:
    """The fingerprint of a raw public key, formatted for people."""
    return format_fingerprint(fingerprint_bytes(public_key, suite))


def parse_key_id(text: str) -> bytes:
    """A key id typed by a person: spaces, colons and dashes ignored, either case."""
    cleaned = "".join(ch for ch in text if ch not in " :-")
    if len(cleaned) != 2 * KEY_ID_LENGTH:
        raise FormatError("a key id is 32 hexadecimal digits")
    try:
        return bytes.fromhex(cleaned)
    except ValueError as exc:
        raise FormatError("a key id is 32 hexadecimal digits") from exc


@dataclass(frozen=True)
class KeyInfo:
    """What is derived from a seed: suite, raw public key, key id, fingerprint."""

    suite: int
    seed: bytes
    public_key: bytes
    key_id: bytes
    fingerprint: str

    @property
    def key_id_hex(self) -> str:
        """The key id as 32 lowercase hex digits (as stored in the database)."""
        return self.key_id.hex()

    @property
    def public_key_file_bytes(self) -> bytes:
        """The public key file content (section 6)."""
        return public_key_file_bytes(self.public_key, self.suite)


def key_info(seed: bytes, suite: int = SUITE_XWING) -> KeyInfo:
    """Derive the public key, key id and fingerprint from a seed."""
    public_key = derive_public_key(seed, suite)
    return KeyInfo(
        suite=suite,
        seed=seed,
        public_key=public_key,
        key_id=key_id(public_key, suite),
        fingerprint=fingerprint(public_key, suite),
    )


# --- section 5: armor -----------------------------------------------------------------------

KIND_PUBLIC = "INCIDENTS PUBLIC KEY"
KIND_PRIVATE = "INCIDENTS PRIVATE KEY"


def dearmor(text: str, kind: str) -> bytes:
    """Decode an armored file of the given kind, strictly."""
    lines = [line.strip() for line in text.split("\n")]
    while lines and lines[-1] == "":  # the file ends with a newline
        lines.pop()
    if len(lines) < 3 or lines[0] != f"-----BEGIN {kind}-----":
        raise FormatError(f"not an armored {kind}: bad BEGIN line")
    if lines[-1] != f"-----END {kind}-----":
        raise FormatError(f"not an armored {kind}: bad END line")
    body = lines[1:-1]
    try:
        blank = body.index("")
    except ValueError as exc:
        raise FormatError("armor without the empty line before the data") from exc
    data = "".join(body[blank + 1 :])
    try:
        return base64.b64decode(data.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise FormatError("armor data is not strict base64") from exc


def armor(kind: str, comments: Sequence[str], data: bytes) -> str:
    """Write an armored file (the comment lines are informational)."""
    encoded = base64.b64encode(data).decode("ascii")
    body = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    lines = [f"-----BEGIN {kind}-----", *comments, "", *body, f"-----END {kind}-----"]
    return "\n".join(lines) + "\n"


def armor_comments(text: str) -> dict[str, str]:
    """The (unauthenticated) ``Name: value`` comment lines of an armored file."""
    comments: dict[str, str] = {}
    for line in text.split("\n")[1:]:
        line = line.strip()
        if not line:
            break
        name, _, value = line.partition(":")
        comments[name.strip()] = value.strip()
    return comments


# --- section 6: public key file -------------------------------------------------------------

PUBLIC_MAGIC = b"IRPK"


def public_key_file_bytes(public_key: bytes, suite: int = SUITE_XWING) -> bytes:
    """``IRPK || 0x01 || suite || raw public key``."""
    _check_suite(suite)
    if len(public_key) != PUBLIC_KEY_LENGTH[suite]:
        raise FormatError("wrong public key length for its suite")
    return PUBLIC_MAGIC + bytes([FORMAT_VERSION, suite]) + public_key


def parse_public_key_file(data: bytes) -> tuple[int, bytes]:
    """Check a public key file's content; return ``(suite, raw public key)``."""
    if len(data) < 6 or data[:4] != PUBLIC_MAGIC:
        raise FormatError("not a public key file (magic)")
    if data[4] != FORMAT_VERSION:
        raise FormatError(f"unknown format version {data[4]:#04x}")
    suite = data[5]
    _check_suite(suite)
    public_key = data[6:]
    if len(public_key) != PUBLIC_KEY_LENGTH[suite]:
        raise FormatError("wrong public key length for its suite")
    hpke_public_key(public_key, suite)  # FIPS 203 modulus check for X-Wing
    return suite, public_key


def read_public_key_armor(text: str) -> tuple[int, bytes, bytes, str]:
    """Parse an armored public key: ``(suite, raw public key, key id, fingerprint)``."""
    suite, public_key = parse_public_key_file(dearmor(text, KIND_PUBLIC))
    return suite, public_key, key_id(public_key, suite), fingerprint(public_key, suite)


# --- section 7: private key file ------------------------------------------------------------

PRIVATE_MAGIC = b"IRSK"
PRIVATE_HEADER = struct.Struct(">4sBBBIII16s12s16s")
PRIVATE_FILE_LENGTH = 111


@dataclass(frozen=True)
class PrivateKeyFile:
    """The header of a private key file and its sealed seed."""

    suite: int
    iterations: int
    memory_kib: int
    lanes: int
    salt: bytes
    nonce: bytes
    key_id: bytes
    header: bytes
    sealed_seed: bytes


def parse_private_key_file(data: bytes) -> PrivateKeyFile:
    """Check the binary content of a private key file (step 1 of section 7)."""
    if len(data) != PRIVATE_FILE_LENGTH:
        raise FormatError("a private key file is 111 bytes")
    header = data[: PRIVATE_HEADER.size]
    magic, version, suite, kdf, t, m, p, salt, nonce, kid = PRIVATE_HEADER.unpack(header)
    if magic != PRIVATE_MAGIC:
        raise FormatError("not a private key file (magic)")
    if version != FORMAT_VERSION:
        raise FormatError(f"unknown format version {version:#04x}")
    _check_suite(suite)
    if kdf != KDF_ARGON2ID:
        raise FormatError(f"unknown KDF {kdf:#04x}")
    if not (1 <= t <= 100 and 1 <= p <= 64 and 8 * p <= m <= 4194304):
        raise FormatError("Argon2id parameters out of range")
    return PrivateKeyFile(suite, t, m, p, salt, nonce, kid, header, data[PRIVATE_HEADER.size :])


def normalize_passphrase(passphrase: str) -> bytes:
    """UTF-8 bytes of the NFC-normalised passphrase."""
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def open_private_key_file(text: str, passphrase: str) -> KeyInfo:
    """Open an armored private key file with its passphrase; return the key (seed included)."""
    parsed = parse_private_key_file(dearmor(text, KIND_PRIVATE))
    file_key = Argon2id(
        salt=parsed.salt,
        length=32,
        iterations=parsed.iterations,
        lanes=parsed.lanes,
        memory_cost=parsed.memory_kib,
    ).derive(normalize_passphrase(passphrase))
    try:
        seed = AESGCM(file_key).decrypt(
            parsed.nonce, parsed.sealed_seed, LABEL_KEY_FILE + parsed.header
        )
    except InvalidTag as exc:
        raise WrongPassphraseError("wrong passphrase or altered key file") from exc
    if len(seed) != SEED_LENGTH:
        raise FormatError("the sealed seed is not 32 bytes")
    info = key_info(seed, parsed.suite)
    if info.key_id != parsed.key_id:
        raise FormatError("the key inside does not match the key id in the header")
    return info


def write_private_key_file(
    key: KeyInfo,
    passphrase: str,
    *,
    iterations: int = 3,
    memory_kib: int = 262144,
    lanes: int = 4,
    comments: Sequence[str] = (),
) -> str:
    """Write an armored private key file (section 7); used to test the reader's checks."""
    header = PRIVATE_HEADER.pack(
        PRIVATE_MAGIC,
        FORMAT_VERSION,
        key.suite,
        KDF_ARGON2ID,
        iterations,
        memory_kib,
        lanes,
        os.urandom(16),
        os.urandom(NONCE_LENGTH),
        key.key_id,
    )
    parsed = parse_private_key_file(header + bytes(SEED_LENGTH + TAG_LENGTH))
    file_key = Argon2id(
        salt=parsed.salt, length=32, iterations=iterations, lanes=lanes, memory_cost=memory_kib
    ).derive(normalize_passphrase(passphrase))
    sealed = AESGCM(file_key).encrypt(parsed.nonce, key.seed, LABEL_KEY_FILE + header)
    return armor(KIND_PRIVATE, comments, header + sealed)


# --- section 9: padding ---------------------------------------------------------------------


def padme(length: int) -> int:
    """PADME(L) of Nikitin et al."""
    if length < 2:
        return length
    e = length.bit_length() - 1
    s = e.bit_length()
    mask = (1 << (e - s)) - 1
    return (length + mask) & ~mask


def pad(value: bytes, floor: int) -> bytes:
    """``u32(len) || value || zeros`` up to ``max(floor, PADME(len(framed)))``."""
    framed = u32(len(value)) + value
    target = max(floor, padme(len(framed)))
    return framed + bytes(target - len(framed))


def unpad(padded: bytes) -> bytes:
    """Inverse of :func:`pad`, checking the length and the zero bytes."""
    if len(padded) < 4:
        raise FormatError("padded value shorter than 4 bytes")
    (n,) = struct.unpack(">I", padded[:4])
    if n > len(padded) - 4:
        raise FormatError("padded length beyond the value")
    if any(padded[4 + n :]):
        raise FormatError("non-zero padding")
    return padded[4 : 4 + n]


# --- section 8: sealed fields ---------------------------------------------------------------


def field_floor(field_name: str) -> int:
    """4096 for ``narrative``, 256 for every other field."""
    return NARRATIVE_FLOOR if field_name == "narrative" else DEFAULT_FLOOR


def field_aad(report_id: str | uuid.UUID | bytes, field_name: str) -> bytes:
    """``length_prefixed("incidents/v1/field", 0x01, report id bytes, UTF-8(field name))``."""
    return length_prefixed(
        LABEL_FIELD,
        bytes([FORMAT_VERSION]),
        report_id_bytes(report_id),
        field_name.encode("utf-8"),
    )


def seal_field(
    data_key: bytes,
    report_id: str | uuid.UUID | bytes,
    field_name: str,
    value: str,
    nonce: bytes | None = None,
) -> bytes:
    """Seal a field value (used to reproduce the test vectors byte for byte)."""
    if len(data_key) != DATA_KEY_LENGTH:
        raise FormatError("a data key is 32 bytes")
    nonce = os.urandom(NONCE_LENGTH) if nonce is None else nonce
    if len(nonce) != NONCE_LENGTH:
        raise FormatError("a nonce is 12 bytes")
    padded = pad(value.encode("utf-8"), field_floor(field_name))
    ciphertext = AESGCM(data_key).encrypt(nonce, padded, field_aad(report_id, field_name))
    return bytes([FORMAT_VERSION, FIELD_SUITE_AES_GCM]) + nonce + ciphertext


def open_field(
    data_key: bytes, report_id: str | uuid.UUID | bytes, field_name: str, blob: bytes
) -> str:
    """Open a sealed field blob and return its text."""
    if len(data_key) != DATA_KEY_LENGTH:
        raise FormatError("a data key is 32 bytes")
    blob = bytes(blob)
    if len(blob) < 2 + NONCE_LENGTH + TAG_LENGTH:
        raise FormatError("sealed field shorter than 30 bytes")
    if blob[0] != FORMAT_VERSION:
        raise FormatError(f"unknown format version {blob[0]:#04x}")
    if blob[1] != FIELD_SUITE_AES_GCM:
        raise FormatError(f"unknown field suite {blob[1]:#04x}")
    nonce = blob[2:14]
    try:
        padded = AESGCM(data_key).decrypt(nonce, blob[14:], field_aad(report_id, field_name))
    except InvalidTag as exc:
        raise DecryptionError(f"sealed field {field_name!r} does not open") from exc
    try:
        return unpad(padded).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"sealed field {field_name!r} is not UTF-8") from exc


# --- section 10: wraps ----------------------------------------------------------------------


def wrap_info(report_id: str | uuid.UUID | bytes, recipient_key_id: bytes) -> bytes:
    """``length_prefixed("incidents/v1/wrap", 0x01, report id bytes, recipient key id)``."""
    if len(recipient_key_id) != KEY_ID_LENGTH:
        raise FormatError("a key id is 16 bytes")
    return length_prefixed(
        LABEL_WRAP, bytes([FORMAT_VERSION]), report_id_bytes(report_id), recipient_key_id
    )


def make_wrap(
    data_key: bytes,
    report_id: str | uuid.UUID | bytes,
    public_key: bytes,
    suite: int = SUITE_XWING,
) -> bytes:
    """Wrap a data key to a recipient (randomised; used to test :func:`open_wrap`)."""
    kid = key_id(public_key, suite)
    sealed = hpke_suite(suite).encrypt(
        data_key, hpke_public_key(public_key, suite), info=wrap_info(report_id, kid)
    )
    return bytes([FORMAT_VERSION, suite]) + kid + sealed


def open_wrap(blob: bytes, report_id: str | uuid.UUID | bytes, key: KeyInfo) -> bytes:
    """Open a wrap with a recipient key; return the 32-byte data key."""
    blob = bytes(blob)
    if len(blob) < 18:
        raise FormatError("wrap too short")
    if blob[0] != FORMAT_VERSION:
        raise FormatError(f"unknown format version {blob[0]:#04x}")
    _check_suite(blob[1])
    if blob[1] != key.suite:
        raise FormatError("the wrap is for a key of another suite")
    if blob[2:18] != key.key_id:
        raise FormatError("the wrap is for another key")
    if len(blob) != 18 + ENC_LENGTH[key.suite] + DATA_KEY_LENGTH + TAG_LENGTH:
        raise FormatError("wrong wrap length for its suite")
    try:
        data_key = hpke_suite(key.suite).decrypt(
            blob[18:], hpke_private_key(key.seed, key.suite), info=wrap_info(report_id, key.key_id)
        )
    except (InvalidTag, ValueError) as exc:
        raise DecryptionError("the wrap does not open with this key") from exc
    if len(data_key) != DATA_KEY_LENGTH:
        raise FormatError("the wrapped data key is not 32 bytes")
    return data_key


# --- section 11: receipts and witness secrets -----------------------------------------------

RECEIPT_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
RECEIPT_LENGTH = 28
_CYRILLIC_LOOKALIKES = str.maketrans(
    "АВЕКМНОРСТХУЗЈавекмнорстхузј",
    "ABEKMHOPCTXY3Jabekmhopctxy3j",
)
_SEPARATORS = frozenset("-_.\u2010\u2011\u2012\u2013\u2014\u2212")
_CONFUSIONS = str.maketrans({"I": "1", "L": "1", "O": "0", "U": "V"})


def normalize_receipt(typed: str) -> str:
    """The 28-character normalised receipt, or :class:`FormatError`."""
    text = typed.translate(_CYRILLIC_LOOKALIKES)
    text = "".join(ch for ch in text if not ch.isspace() and ch not in _SEPARATORS)
    if not text.isascii():
        raise FormatError("a receipt has only Latin letters and digits")
    text = text.upper().translate(_CONFUSIONS)
    if len(text) != RECEIPT_LENGTH or any(ch not in RECEIPT_ALPHABET for ch in text):
        raise FormatError("a receipt is 28 symbols of the Crockford alphabet")
    return text


def format_receipt(normalized: str) -> str:
    """Seven groups of four symbols joined by dashes."""
    return "-".join(normalized[i : i + 4] for i in range(0, len(normalized), 4))


def _receipt_hkdf(normalized: str, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=LABEL_RECEIPT, info=info).derive(
        normalized.encode("ascii")
    )


def lookup_token(normalized: str) -> bytes:
    """``HKDF-SHA256(salt="incidents/v1/receipt", ikm=receipt, info="lookup-token", 32)``."""
    return _receipt_hkdf(normalized, INFO_LOOKUP_TOKEN)


def witness_key_seed(normalized: str) -> bytes:
    """``HKDF-SHA256(salt="incidents/v1/receipt", ikm=receipt, info="witness-key-seed", 32)``."""
    return _receipt_hkdf(normalized, INFO_WITNESS_KEY_SEED)


def witness_key(normalized: str) -> KeyInfo:
    """The witness's X-Wing key derived from a normalised receipt."""
    return key_info(witness_key_seed(normalized), SUITE_XWING)


def lookup_hash(token: bytes, server_secret: str | bytes) -> bytes:
    """``HMAC-SHA256(key = UTF-8(INCIDENTS_RECEIPT_SECRET), message = lookup token)``."""
    secret = server_secret.encode("utf-8") if isinstance(server_secret, str) else server_secret
    return hmac.new(secret, token, hashlib.sha256).digest()


# --- section 13: reading a stored report ----------------------------------------------------


def read_report(
    report_id: str | uuid.UUID | bytes,
    sealed_columns: Mapping[str, bytes],
    wrap_blob: bytes,
    key: KeyInfo,
) -> dict[str, str]:
    """Open a report from its row values: ``{field name: text}`` for the six sealed fields.

    ``sealed_columns`` maps column names (``narrative_sealed``) or field names (``narrative``)
    to the blobs.
    """
    data_key = open_wrap(wrap_blob, report_id, key)
    values: dict[str, str] = {}
    for column, blob in sealed_columns.items():
        field_name = column.removesuffix("_sealed")
        values[field_name] = open_field(data_key, report_id, field_name, blob)
    return values


_REPORT_QUERY = "SELECT format_version, {columns} FROM reports WHERE id = {param}"
_WRAP_QUERY = "SELECT blob FROM wraps WHERE report_id = {param} AND key_id = {param}"


def _sealed_column_list() -> str:
    return ", ".join(f"{name}_sealed" for name in SEALED_FIELDS)


def _open_rows(
    rid: bytes, row: Sequence[Any] | None, wrap: Sequence[Any] | None, key: KeyInfo
) -> dict[str, str]:
    if row is None:
        raise LookupError(f"no report {uuid.UUID(bytes=rid)}")
    if row[0] != FORMAT_VERSION:
        raise FormatError(f"unknown report format version {row[0]!r}")
    if wrap is None:
        raise LookupError(f"report {uuid.UUID(bytes=rid)} is not shared with key {key.key_id_hex}")
    sealed = {name: bytes(blob) for name, blob in zip(SEALED_FIELDS, row[1:], strict=True)}
    return read_report(rid, sealed, bytes(wrap[0]), key)


def open_report_from_sqlite(
    db_path: str | os.PathLike[str],
    report_id: str | uuid.UUID | bytes,
    key_file_text: str,
    passphrase: str,
) -> dict[str, str]:
    """Open a report straight from the register's SQLite file (read-only)."""
    key = open_private_key_file(key_file_text, passphrase)
    rid = report_id_bytes(report_id)
    uri = Path(db_path).resolve().as_uri() + "?mode=ro"
    connection = sqlite3.connect(uri, uri=True)
    try:
        row = connection.execute(
            _REPORT_QUERY.format(columns=_sealed_column_list(), param="?"), (rid.hex(),)
        ).fetchone()
        wrap = connection.execute(
            _WRAP_QUERY.format(param="?"), (rid.hex(), key.key_id_hex)
        ).fetchone()
    finally:
        connection.close()
    return _open_rows(rid, row, wrap, key)


def open_report_from_postgres(
    conninfo: str,
    report_id: str | uuid.UUID | bytes,
    key_file_text: str,
    passphrase: str,
) -> dict[str, str]:
    """Open a report straight from the register's PostgreSQL database (libpq conninfo/URL)."""
    import psycopg  # only needed for PostgreSQL

    key = open_private_key_file(key_file_text, passphrase)
    rid = report_id_bytes(report_id)
    ruuid = uuid.UUID(bytes=rid)
    with psycopg.connect(conninfo) as connection:
        row = connection.execute(
            _REPORT_QUERY.format(columns=_sealed_column_list(), param="%s"),  # type: ignore[arg-type]
            (ruuid,),
        ).fetchone()
        wrap = connection.execute(
            _WRAP_QUERY.format(param="%s"),  # type: ignore[arg-type]
            (ruuid, key.key_id_hex),
        ).fetchone()
    return _open_rows(rid, row, wrap, key)


# --- command line ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.independent.reader --sqlite FILE --key KEYFILE REPORT_ID``."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.independent.reader",
        description="Open a stored report (format v1) with a private key file.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--sqlite", metavar="FILE", help="the register's SQLite database file")
    source.add_argument("--postgres", metavar="CONNINFO", help="a libpq connection string/URL")
    parser.add_argument("--key", metavar="KEYFILE", required=True, help="armored private key")
    parser.add_argument("report_id", metavar="REPORT_ID", help="the report's UUID")
    args = parser.parse_args(argv)

    key_text = Path(args.key).read_text(encoding="utf-8")
    passphrase = os.environ.get("INCIDENTS_KEY_PASSPHRASE")
    if passphrase is None:
        passphrase = getpass.getpass("Passphrase of the private key: ")
    try:
        if args.sqlite:
            fields = open_report_from_sqlite(args.sqlite, args.report_id, key_text, passphrase)
        else:
            fields = open_report_from_postgres(args.postgres, args.report_id, key_text, passphrase)
    except (FormatError, DecryptionError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report = {"report_id": str(uuid.UUID(bytes=report_id_bytes(args.report_id))), **fields}
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
