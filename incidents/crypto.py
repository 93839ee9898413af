"""Cryptographic format v1 of the incident register: the only importer of ``cryptography``.

Responsibilities: recipient key pairs (X-Wing seeds), key ids and fingerprints, public and
passphrase-protected private key files, per-report data keys, sealed fields, HPKE wraps of data
keys, length-hiding padding, receipt-derived witness secrets and SLIP-39 seed backups.

Guarantees (see ``docs/format.md`` for the byte-level description):

* Every blob starts with a format version byte and a suite byte; unknown values are refused.
* A sealed field is bound to its report id and field name: a blob moved to another report or
  field fails to open, as does any flipped, truncated or extended byte.
* A wrap is bound to its report id and the recipient key id through HPKE ``info``.
* Plaintext lengths are hidden within padding buckets: max(floor, PADME(4 + len)).
* Private key material appears only in ``PrivateKey`` objects and in key files encrypted with a
  key derived by Argon2id; it is never logged or included in exception messages.

Randomness always comes from the operating system; tests inject fixed values only through the
keyword arguments documented as "for test vectors".
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import secrets
import struct
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.backends.openssl.backend import backend as _openssl_backend
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FORMAT_VERSION = 1

SUITE_XWING = 0x01
"""HPKE: KEM MLKEM768_X25519 (X-Wing), KDF HKDF_SHA256, AEAD AES_256_GCM."""
SUITE_X25519 = 0x02
"""HPKE: KEM DHKEM(X25519, HKDF-SHA256), KDF HKDF_SHA256, AEAD AES_256_GCM."""
FIELD_SUITE_AES256GCM = 0x01
"""Sealed fields: AES-256-GCM with a 96-bit random nonce."""
KDF_ARGON2ID = 0x01

SEED_LENGTH = 32
DATA_KEY_LENGTH = 32
NONCE_LENGTH = 12
KEY_ID_LENGTH = 16
SALT_LENGTH = 16
MLKEM768_PUBLIC_LENGTH = 1184
X25519_PUBLIC_LENGTH = 32

SHORT_FIELD_FLOOR = 256
LONG_FIELD_FLOOR = 4096

LABEL_KEY_ID = b"incidents/v1/key-id"
LABEL_FINGERPRINT = b"incidents/v1/fingerprint"
LABEL_FIELD = b"incidents/v1/field"
LABEL_WRAP = b"incidents/v1/wrap"
LABEL_KEY_FILE = b"incidents/v1/key-file"
LABEL_POSSESSION = b"incidents/v1/possession"
LABEL_RECEIPT_SALT = b"incidents/v1/receipt"
LABEL_RECEIPT_LOOKUP = b"lookup-token"
LABEL_RECEIPT_WITNESS_KEY = b"witness-key-seed"

PUBLIC_MAGIC = b"IRPK"
PRIVATE_MAGIC = b"IRSK"
PUBLIC_ARMOR = "INCIDENTS PUBLIC KEY"
PRIVATE_ARMOR = "INCIDENTS PRIVATE KEY"

CROCKFORD_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
RECEIPT_SYMBOLS = 28  # 140 bits, shown as 7 groups of 4
RECEIPT_GROUP = 4

_SUITE_NAMES = {SUITE_XWING: "X-Wing (ML-KEM-768 + X25519)", SUITE_X25519: "X25519"}
_SUITE_PUBLIC_LENGTHS = {
    SUITE_XWING: MLKEM768_PUBLIC_LENGTH + X25519_PUBLIC_LENGTH,
    SUITE_X25519: X25519_PUBLIC_LENGTH,
}
_MAX_ARGON2_MEMORY_KIB = 4 * 1024 * 1024


class CryptoError(Exception):
    """Raised for any failure of the cryptographic layer; subclasses say which."""


class UnsupportedPlatformError(CryptoError):
    """Raised at startup when the OpenSSL in use lacks ML-KEM."""


class FormatError(CryptoError):
    """Raised when a blob or key file is malformed, truncated or of an unknown version/suite."""


class DecryptionError(CryptoError):
    """Raised when authentication fails: wrong key, tampered, truncated or moved ciphertext."""


class WrongPassphraseError(CryptoError):
    """Raised when a private key file cannot be opened with the given passphrase."""


class ReceiptError(CryptoError):
    """Raised when a receipt code cannot be parsed after typo normalisation."""


def ensure_platform_support() -> None:
    """Raise UnsupportedPlatformError unless the linked OpenSSL offers ML-KEM (needed by X-Wing)."""
    if not _openssl_backend.mlkem_supported():
        raise UnsupportedPlatformError(
            "the installed 'cryptography' build has no ML-KEM support; install the wheel pinned "
            "in requirements.txt (it bundles a recent OpenSSL)"
        )


# --------------------------------------------------------------------------- encoding helpers


def length_prefixed(*parts: bytes) -> bytes:
    """Concatenate parts, each preceded by its length as a 4-byte big-endian integer."""
    return b"".join(struct.pack(">I", len(part)) + part for part in parts)


def padme_length(length: int) -> int:
    """Return the PADME padded length for ``length`` bytes (Nikitin et al., PETS 2019)."""
    if length < 2:
        return length
    exponent = length.bit_length() - 1
    mantissa_bits = exponent.bit_length()
    last_bits = exponent - mantissa_bits
    mask = (1 << last_bits) - 1
    return (length + mask) & ~mask


def pad(value: bytes, *, floor: int) -> bytes:
    """Prefix value with its 4-byte length and zero-pad to max(floor, PADME(4 + len))."""
    framed = struct.pack(">I", len(value)) + value
    target = max(floor, padme_length(len(framed)))
    return framed + bytes(target - len(framed))


def unpad(padded: bytes) -> bytes:
    """Invert ``pad``; raise FormatError if the length prefix or padding is inconsistent."""
    if len(padded) < 4:
        raise FormatError("padded value is shorter than its length prefix")
    (length,) = struct.unpack(">I", padded[:4])
    if length > len(padded) - 4:
        raise FormatError("padded value is shorter than its declared length")
    if any(padded[4 + length :]):
        raise FormatError("padding bytes are not zero")
    return padded[4 : 4 + length]


LONG_FIELDS = frozenset({"narrative", "text", "body"})
"""Free-text fields padded to at least 4 KiB: the narrative, additions' text, replies' body."""


def field_floor(name: str) -> int:
    """Return the padding floor for a sealed field: 4 KiB for long texts, 256 B otherwise."""
    return LONG_FIELD_FLOOR if name in LONG_FIELDS else SHORT_FIELD_FLOOR


def _header(suite: int) -> bytes:
    """The format-version and suite bytes that start every sealed blob and key."""
    return bytes([FORMAT_VERSION, suite])


def _check_header(blob: bytes, *, allowed_suites: Iterable[int], what: str) -> int:
    """Check a blob's format version and suite; return the suite."""
    if len(blob) < 2:
        raise FormatError(f"{what} is truncated")
    if blob[0] != FORMAT_VERSION:
        raise FormatError(f"{what} has unsupported format version {blob[0]}")
    if blob[1] not in allowed_suites:
        raise FormatError(f"{what} has unsupported suite {blob[1]}")
    return blob[1]


def _report_id_bytes(report_id: uuid.UUID) -> bytes:
    """The report id as it is bound into associated data."""
    return report_id.bytes


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class PublicKey:
    """A recipient public key: suite byte and raw public bytes (X-Wing: ML-KEM pk || X25519 pk)."""

    suite: int
    raw: bytes

    def __post_init__(self) -> None:
        """Validate suite and length so an invalid key can never be used to seal."""
        expected = _SUITE_PUBLIC_LENGTHS.get(self.suite)
        if expected is None:
            raise FormatError(f"unsupported key suite {self.suite}")
        if len(self.raw) != expected:
            raise FormatError("public key has the wrong length for its suite")
        self._hpke_public()  # parses the components; raises FormatError if invalid

    @functools.cached_property
    def key_id(self) -> bytes:
        """First 16 bytes of SHA-256 over length-prefixed (label, suite, public key)."""
        digest = hashlib.sha256(length_prefixed(LABEL_KEY_ID, bytes([self.suite]), self.raw))
        return digest.digest()[:KEY_ID_LENGTH]

    @property
    def key_id_hex(self) -> str:
        """The key id as 32 lowercase hex digits (the form used in configuration and the DB)."""
        return self.key_id.hex()

    @property
    def fingerprint(self) -> str:
        """40 hex digits in groups of 4, for people to compare over a trusted channel."""
        digest = hashlib.sha256(
            length_prefixed(LABEL_FINGERPRINT, bytes([self.suite]), self.raw)
        ).hexdigest()[:40]
        return " ".join(digest[i : i + 4] for i in range(0, 40, 4)).upper()

    @property
    def suite_name(self) -> str:
        """Human-readable name of the key's suite."""
        return _SUITE_NAMES[self.suite]

    def to_bytes(self) -> bytes:
        """Serialise as magic || version || suite || raw."""
        return PUBLIC_MAGIC + _header(self.suite) + self.raw

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKey:
        """Parse the output of ``to_bytes``; raise FormatError if it is not a public key."""
        if not data.startswith(PUBLIC_MAGIC):
            raise FormatError("not an incident register public key")
        body = data[len(PUBLIC_MAGIC) :]
        suite = _check_header(body, allowed_suites=_SUITE_PUBLIC_LENGTHS, what="public key")
        return cls(suite=suite, raw=body[2:])

    def to_armor(self) -> str:
        """Serialise as an ASCII-armored text file with informational comment lines."""
        comments = [
            f"Suite: {self.suite_name}",
            f"Key-Id: {self.key_id_hex}",
            f"Fingerprint: {self.fingerprint}",
        ]
        return _armor(PUBLIC_ARMOR, self.to_bytes(), comments)

    @classmethod
    def from_armor(cls, text: str) -> PublicKey:
        """Parse an armored public key file; raise FormatError on anything else."""
        return cls.from_bytes(_dearmor(PUBLIC_ARMOR, text))

    def _hpke_public(self) -> hpke.MLKEM768X25519PublicKey | x25519.X25519PublicKey:
        """The key as a ``cryptography`` HPKE recipient; raise FormatError if invalid."""
        try:
            if self.suite == SUITE_XWING:
                return hpke.MLKEM768X25519PublicKey(
                    mlkem.MLKEM768PublicKey.from_public_bytes(self.raw[:MLKEM768_PUBLIC_LENGTH]),
                    x25519.X25519PublicKey.from_public_bytes(self.raw[MLKEM768_PUBLIC_LENGTH:]),
                )
            return x25519.X25519PublicKey.from_public_bytes(self.raw)
        except ValueError as exc:
            raise FormatError("public key bytes are not a valid key") from exc


@dataclass(frozen=True)
class PrivateKey:
    """A recipient private key held as its 32-byte seed; never serialised in clear.

    The public key and the expanded HPKE private key are derived once and cached on the object
    (they are as secret as the seed itself, and deriving them costs more than a decapsulation).
    """

    suite: int
    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        """Validate suite and seed length."""
        if self.suite not in _SUITE_PUBLIC_LENGTHS:
            raise FormatError(f"unsupported key suite {self.suite}")
        if len(self.seed) != SEED_LENGTH:
            raise FormatError("a private key seed must be 32 bytes")

    @classmethod
    def generate(cls, *, suite: int = SUITE_XWING) -> PrivateKey:
        """Create a new key from 32 random bytes of the operating system's CSPRNG."""
        return cls(suite=suite, seed=secrets.token_bytes(SEED_LENGTH))

    def public_key(self) -> PublicKey:
        """Derive the public key deterministically from the seed."""
        return self._public

    @functools.cached_property
    def _public(self) -> PublicKey:
        """Derive the public key from the seed (cached)."""
        if self.suite == SUITE_XWING:
            mlkem_private, x_private = _expand_xwing_seed(self.seed)
            raw = (
                mlkem_private.public_key().public_bytes_raw()
                + x_private.public_key().public_bytes_raw()
            )
        else:
            raw = (
                x25519.X25519PrivateKey.from_private_bytes(self.seed)
                .public_key()
                .public_bytes_raw()
            )
        return PublicKey(suite=self.suite, raw=raw)

    @functools.cached_property
    def key_id(self) -> bytes:
        """The key id of the matching public key."""
        return self.public_key().key_id

    def _hpke_private(self) -> hpke.MLKEM768X25519PrivateKey | x25519.X25519PrivateKey:
        """The private key in the form HPKE decapsulation takes."""
        return self._expanded_private

    @functools.cached_property
    def _expanded_private(self) -> hpke.MLKEM768X25519PrivateKey | x25519.X25519PrivateKey:
        """Expand the seed into the ``cryptography`` private key for HPKE (cached)."""
        if self.suite == SUITE_XWING:
            mlkem_private, x_private = _expand_xwing_seed(self.seed)
            return hpke.MLKEM768X25519PrivateKey(mlkem_private, x_private)
        return x25519.X25519PrivateKey.from_private_bytes(self.seed)


def _expand_xwing_seed(
    seed: bytes,
) -> tuple[mlkem.MLKEM768PrivateKey, x25519.X25519PrivateKey]:
    """Expand a 32-byte X-Wing seed (SHAKE256) into its ML-KEM-768 and X25519 keys."""
    digest = hashes.Hash(hashes.SHAKE256(96))
    digest.update(seed)
    expanded = digest.finalize()
    return (
        mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64]),
        x25519.X25519PrivateKey.from_private_bytes(expanded[64:96]),
    )


def _hpke_suite(suite: int) -> hpke.Suite:
    """The HPKE suite (KEM, HKDF-SHA256, AES-256-GCM) for one of the key suites."""
    kem = hpke.KEM.MLKEM768_X25519 if suite == SUITE_XWING else hpke.KEM.X25519
    return hpke.Suite(kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def parse_key_id(text: str) -> bytes:
    """Parse a key id written as 32 hex digits (spaces and colons allowed); raise FormatError."""
    cleaned = "".join(ch for ch in text if ch not in " :-").lower()
    try:
        key_id = bytes.fromhex(cleaned)
    except ValueError as exc:
        raise FormatError("a key id is 32 hexadecimal digits") from exc
    if len(key_id) != KEY_ID_LENGTH:
        raise FormatError("a key id is 32 hexadecimal digits")
    return key_id


# --------------------------------------------------------------------------- armor


def _armor(kind: str, data: bytes, comments: Iterable[str]) -> str:
    """Base64 ``data`` in 64-column lines between BEGIN/END lines, after the comments."""
    encoded = base64.b64encode(data).decode("ascii")
    lines = [f"-----BEGIN {kind}-----", *comments, ""]
    lines += [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    lines.append(f"-----END {kind}-----")
    return "\n".join(lines) + "\n"


def _dearmor(kind: str, text: str) -> bytes:
    """Return the data of an armored ``kind`` block; raise FormatError if it is malformed."""
    begin, end = f"-----BEGIN {kind}-----", f"-----END {kind}-----"
    lines = [line.strip() for line in text.strip().splitlines()]
    if not lines or lines[0] != begin or lines[-1] != end:
        raise FormatError(f"not an armored {kind.lower()}")
    body = lines[1:-1]
    if "" not in body:
        raise FormatError(f"armored {kind.lower()} has no blank line before its data")
    data_lines = body[body.index("") + 1 :]
    try:
        return base64.b64decode("".join(data_lines), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"armored {kind.lower()} is not valid base64") from exc


# --------------------------------------------------------------------------- private key files


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost parameters stored in a key file header."""

    iterations: int = 3
    memory_kib: int = 256 * 1024
    lanes: int = 4

    def __post_init__(self) -> None:
        """Refuse parameters outside what the reader will accept."""
        if not (1 <= self.iterations <= 100 and 1 <= self.lanes <= 64):
            raise FormatError("Argon2id parameters out of range")
        if not (8 * self.lanes <= self.memory_kib <= _MAX_ARGON2_MEMORY_KIB):
            raise FormatError("Argon2id memory parameter out of range")


DEFAULT_KDF = KdfParams()
_KEY_FILE_HEADER = struct.Struct(">4sBBBIII16s12s16s")


def normalize_passphrase(passphrase: str) -> bytes:
    """UTF-8 of the NFC form, so the same words typed on another system give the same key."""
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def _derive_file_key(passphrase: str, salt: bytes, params: KdfParams) -> bytes:
    """Derive the key that seals a private key file from its passphrase (Argon2id)."""
    kdf = Argon2id(
        salt=salt,
        length=32,
        iterations=params.iterations,
        lanes=params.lanes,
        memory_cost=params.memory_kib,
    )
    return kdf.derive(normalize_passphrase(passphrase))


def encrypt_private_key(
    private_key: PrivateKey, *, passphrase: str, kdf: KdfParams = DEFAULT_KDF
) -> str:
    """Return the armored private key file: the seed under AES-256-GCM with an Argon2id key.

    The whole binary header (magic, version, suite, KDF id and parameters, salt, nonce, key id)
    is the AEAD's associated data, so no parameter can be changed without detection.
    """
    salt = secrets.token_bytes(SALT_LENGTH)
    nonce = secrets.token_bytes(NONCE_LENGTH)
    header = _KEY_FILE_HEADER.pack(
        PRIVATE_MAGIC,
        FORMAT_VERSION,
        private_key.suite,
        KDF_ARGON2ID,
        kdf.iterations,
        kdf.memory_kib,
        kdf.lanes,
        salt,
        nonce,
        private_key.key_id,
    )
    file_key = _derive_file_key(passphrase, salt, kdf)
    sealed = AESGCM(file_key).encrypt(nonce, private_key.seed, LABEL_KEY_FILE + header)
    public = private_key.public_key()
    comments = [f"Suite: {public.suite_name}", f"Key-Id: {public.key_id_hex}"]
    return _armor(PRIVATE_ARMOR, header + sealed, comments)


@dataclass(frozen=True)
class KeyFileInfo:
    """What a private key file reveals without its passphrase."""

    suite: int
    key_id: bytes
    kdf: KdfParams


def inspect_private_key_file(text: str) -> KeyFileInfo:
    """Parse a private key file's header without decrypting; raise FormatError if malformed."""
    info, _header_bytes, _sealed = _parse_key_file(text)
    return info


def _parse_key_file(text: str) -> tuple[KeyFileInfo, bytes, bytes]:
    """Split a private key file into its checked parameters, raw header and sealed seed."""
    data = _dearmor(PRIVATE_ARMOR, text)
    if len(data) != _KEY_FILE_HEADER.size + SEED_LENGTH + 16:
        raise FormatError("private key file is truncated or has trailing data")
    header, sealed = data[: _KEY_FILE_HEADER.size], data[_KEY_FILE_HEADER.size :]
    magic, version, suite, kdf_id, iterations, memory, lanes, _salt, _nonce, key_id = (
        _KEY_FILE_HEADER.unpack(header)
    )
    if magic != PRIVATE_MAGIC:
        raise FormatError("not an incident register private key file")
    if version != FORMAT_VERSION:
        raise FormatError(f"private key file has unsupported format version {version}")
    if suite not in _SUITE_PUBLIC_LENGTHS:
        raise FormatError(f"private key file has unsupported suite {suite}")
    if kdf_id != KDF_ARGON2ID:
        raise FormatError(f"private key file has unsupported KDF {kdf_id}")
    params = KdfParams(iterations=iterations, memory_kib=memory, lanes=lanes)
    return KeyFileInfo(suite=suite, key_id=key_id, kdf=params), header, sealed


def decrypt_private_key(text: str, *, passphrase: str) -> PrivateKey:
    """Open an armored private key file; raise WrongPassphraseError or FormatError."""
    info, header, sealed = _parse_key_file(text)
    salt = header[-(SALT_LENGTH + NONCE_LENGTH + KEY_ID_LENGTH) : -(NONCE_LENGTH + KEY_ID_LENGTH)]
    nonce = header[-(NONCE_LENGTH + KEY_ID_LENGTH) : -KEY_ID_LENGTH]
    file_key = _derive_file_key(passphrase, salt, info.kdf)
    try:
        seed = AESGCM(file_key).decrypt(nonce, sealed, LABEL_KEY_FILE + header)
    except InvalidTag as exc:
        raise WrongPassphraseError("wrong passphrase, or the key file was altered") from exc
    private_key = PrivateKey(suite=info.suite, seed=seed)
    if private_key.key_id != info.key_id:
        raise FormatError("key file's key id does not match its key")
    return private_key


# --------------------------------------------------------------------------- sealed fields


def new_data_key() -> bytes:
    """Return a fresh random 256-bit data key (DEK) for one report or addition."""
    return secrets.token_bytes(DATA_KEY_LENGTH)


def field_aad(*, report_id: uuid.UUID, name: str) -> bytes:
    """Associated data binding a sealed field to its report and field name."""
    return length_prefixed(
        LABEL_FIELD, bytes([FORMAT_VERSION]), _report_id_bytes(report_id), name.encode("utf-8")
    )


def seal_field(
    value: str,
    *,
    data_key: bytes,
    report_id: uuid.UUID,
    name: str,
    nonce: bytes | None = None,
) -> bytes:
    """Encrypt one text field: version || suite || nonce || AES-256-GCM(pad(value), AAD).

    ``nonce`` is for test vectors only; production callers leave it to the CSPRNG.
    """
    return seal_bytes(
        value.encode("utf-8"),
        data_key=data_key,
        report_id=report_id,
        name=name,
        floor=field_floor(name),
        nonce=nonce,
    )


def seal_bytes(
    value: bytes,
    *,
    data_key: bytes,
    report_id: uuid.UUID,
    name: str,
    floor: int,
    nonce: bytes | None = None,
) -> bytes:
    """Encrypt bytes as a sealed field with an explicit padding floor."""
    if len(data_key) != DATA_KEY_LENGTH:
        raise CryptoError("a data key must be 32 bytes")
    nonce = secrets.token_bytes(NONCE_LENGTH) if nonce is None else nonce
    if len(nonce) != NONCE_LENGTH:
        raise CryptoError("a nonce must be 12 bytes")
    padded = pad(value, floor=floor)
    ciphertext = AESGCM(data_key).encrypt(nonce, padded, field_aad(report_id=report_id, name=name))
    return _header(FIELD_SUITE_AES256GCM) + nonce + ciphertext


def check_sealed_field(blob: bytes) -> None:
    """Check that ``blob`` looks like a sealed field (version, suite, length) without opening it.

    For the server, which stores fields sealed on a desk but holds no key to open them.
    """
    _check_header(blob, allowed_suites=(FIELD_SUITE_AES256GCM,), what="sealed field")
    if len(blob) < 2 + NONCE_LENGTH + 16 + SHORT_FIELD_FLOOR:
        raise FormatError("sealed field is truncated")


def open_bytes(blob: bytes, *, data_key: bytes, report_id: uuid.UUID, name: str) -> bytes:
    """Decrypt a sealed field to bytes; raise DecryptionError or FormatError."""
    _check_header(blob, allowed_suites=(FIELD_SUITE_AES256GCM,), what="sealed field")
    if len(blob) < 2 + NONCE_LENGTH + 16:
        raise FormatError("sealed field is truncated")
    nonce, ciphertext = blob[2 : 2 + NONCE_LENGTH], blob[2 + NONCE_LENGTH :]
    if len(data_key) != DATA_KEY_LENGTH:
        raise CryptoError("a data key must be 32 bytes")
    try:
        padded = AESGCM(data_key).decrypt(
            nonce, ciphertext, field_aad(report_id=report_id, name=name)
        )
    except InvalidTag as exc:
        raise DecryptionError(f"sealed field '{name}' failed authentication") from exc
    return unpad(padded)


def open_field(blob: bytes, *, data_key: bytes, report_id: uuid.UUID, name: str) -> str:
    """Decrypt a sealed text field; raise DecryptionError or FormatError."""
    value = open_bytes(blob, data_key=data_key, report_id=report_id, name=name)
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"sealed field '{name}' is not UTF-8") from exc


# --------------------------------------------------------------------------- wraps


def wrap_info(*, report_id: uuid.UUID, key_id: bytes) -> bytes:
    """HPKE ``info`` binding a wrap to its report and recipient key id."""
    return length_prefixed(LABEL_WRAP, bytes([FORMAT_VERSION]), _report_id_bytes(report_id), key_id)


def wrap_data_key(data_key: bytes, *, report_id: uuid.UUID, recipient: PublicKey) -> bytes:
    """Seal a data key to one recipient: version || suite || key id || HPKE(enc || ct)."""
    if len(data_key) != DATA_KEY_LENGTH:
        raise CryptoError("a data key must be 32 bytes")
    sealed = _hpke_suite(recipient.suite).encrypt(
        data_key,
        recipient._hpke_public(),
        info=wrap_info(report_id=report_id, key_id=recipient.key_id),
    )
    return _header(recipient.suite) + recipient.key_id + sealed


def wrap_key_id(blob: bytes) -> bytes:
    """Return the recipient key id a wrap is addressed to; raise FormatError if malformed."""
    _check_header(blob, allowed_suites=_SUITE_PUBLIC_LENGTHS, what="wrap")
    if len(blob) < 2 + KEY_ID_LENGTH:
        raise FormatError("wrap is truncated")
    return blob[2 : 2 + KEY_ID_LENGTH]


def unwrap_data_key(blob: bytes, *, report_id: uuid.UUID, private_key: PrivateKey) -> bytes:
    """Open a wrap with a private key; raise DecryptionError if it is not for this key/report."""
    suite = _check_header(blob, allowed_suites=_SUITE_PUBLIC_LENGTHS, what="wrap")
    key_id = wrap_key_id(blob)
    if suite != private_key.suite or not hmac.compare_digest(key_id, private_key.key_id):
        raise DecryptionError("this wrap is addressed to another key")
    try:
        data_key = _hpke_suite(suite).decrypt(
            blob[2 + KEY_ID_LENGTH :],
            private_key._hpke_private(),
            info=wrap_info(report_id=report_id, key_id=key_id),
        )
    except (InvalidTag, ValueError) as exc:
        raise DecryptionError("wrap failed authentication (tampered or moved)") from exc
    if len(data_key) != DATA_KEY_LENGTH:
        raise FormatError("wrapped data key has the wrong length")
    return data_key


# --------------------------------------------------------------------------- desk storage

LABEL_DESK_STORAGE = b"incidents/v1/desk-storage"
DESK_STORAGE_ID = uuid.UUID("0b6c3f7e-2d4a-5e91-8f3b-7a1d2c9e4f60")


def desk_storage_key(private_key: PrivateKey) -> bytes:
    """A symmetric key for what a desk keeps about itself (e.g. its API token), derived from the
    private key's seed: readable only while the desk is unlocked."""
    return HKDF(
        algorithm=hashes.SHA256(), length=DATA_KEY_LENGTH, salt=None, info=LABEL_DESK_STORAGE
    ).derive(private_key.seed)


# --------------------------------------------------------------------------- proof of possession

POSSESSION_CHALLENGE_ID = uuid.UUID("6f1c2a54-8c1e-5b7e-9d43-5e0c1f2a7b90")
"""Envelope id bound into possession challenges; never a report id (those are random v4)."""


def new_possession_challenge(recipient: PublicKey) -> tuple[bytes, str]:
    """A challenge only the holder of ``recipient``'s private key can answer.

    Returns the challenge (a wrap of a random secret, bound to ``POSSESSION_CHALLENGE_ID`` so
    that no report's wrap can be passed off as a challenge) and the expected answer.
    """
    secret = secrets.token_bytes(DATA_KEY_LENGTH)
    blob = wrap_data_key(secret, report_id=POSSESSION_CHALLENGE_ID, recipient=recipient)
    return blob, hashlib.sha256(LABEL_POSSESSION + secret).hexdigest()


def answer_possession_challenge(blob: bytes, *, private_key: PrivateKey) -> str:
    """Answer a possession challenge: a hash of its secret (the secret itself never leaves)."""
    secret = unwrap_data_key(blob, report_id=POSSESSION_CHALLENGE_ID, private_key=private_key)
    return hashlib.sha256(LABEL_POSSESSION + secret).hexdigest()


# --------------------------------------------------------------------------- whole reports


@dataclass(frozen=True)
class SealedReport:
    """Ciphertext of one report: sealed fields by name and wraps by recipient key id."""

    report_id: uuid.UUID
    fields: dict[str, bytes]
    wraps: dict[bytes, bytes]


def seal_report(
    values: Mapping[str, str],
    *,
    report_id: uuid.UUID,
    recipients: Iterable[PublicKey],
    data_key: bytes | None = None,
) -> SealedReport:
    """Seal every value under a data key and wrap that key to each recipient.

    Used for every envelope (a report, an addition, a reply): ``report_id`` is the envelope's id.
    ``data_key`` is fresh unless given (attachments streamed before the form was validated were
    already sealed under keys derived from it).
    """
    recipient_list = list(recipients)
    if not recipient_list:
        raise CryptoError("a report needs at least one recipient")
    data_key = new_data_key() if data_key is None else data_key
    fields = {
        name: seal_field(value, data_key=data_key, report_id=report_id, name=name)
        for name, value in values.items()
    }
    wraps = {
        recipient.key_id: wrap_data_key(data_key, report_id=report_id, recipient=recipient)
        for recipient in recipient_list
    }
    return SealedReport(report_id=report_id, fields=fields, wraps=wraps)


def open_report(
    sealed_fields: Mapping[str, bytes],
    *,
    report_id: uuid.UUID,
    wrap: bytes,
    private_key: PrivateKey,
) -> dict[str, str]:
    """Unwrap the data key with ``private_key`` and open every sealed field."""
    data_key = unwrap_data_key(wrap, report_id=report_id, private_key=private_key)
    return {
        name: open_field(blob, data_key=data_key, report_id=report_id, name=name)
        for name, blob in sealed_fields.items()
    }


# --------------------------------------------------------------------------- attachments (STREAM)


STREAM_SUITE_AES256GCM_64K = 0x01
"""Attachments: AES-256-GCM STREAM (nonce prefix, chunk counter, last-chunk flag), 64 KiB chunks."""
STREAM_CHUNK_SIZE = 64 * 1024
STREAM_PREFIX_LENGTH = 7
ATTACHMENT_FLOOR = 64 * 1024
LABEL_ATTACHMENT = b"incidents/v1/attachment"
_STREAM_HEADER = struct.Struct(">BB7sI")
_TAG_LENGTH = 16


def attachment_key(data_key: bytes, *, attachment_id: uuid.UUID) -> bytes:
    """The attachment's own key: HKDF-SHA256 of the envelope's data key, bound to its id."""
    if len(data_key) != DATA_KEY_LENGTH:
        raise CryptoError("a data key must be 32 bytes")
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=length_prefixed(LABEL_ATTACHMENT, bytes([FORMAT_VERSION]), attachment_id.bytes),
    ).derive(data_key)


def padded_attachment_length(size: int) -> int:
    """Plaintext length after padding: max(64 KiB, PADME(size)), so sizes leak only a bucket."""
    return max(ATTACHMENT_FLOOR, padme_length(size))


def stream_ciphertext_length(padded_size: int) -> int:
    """Length of the STREAM blob of ``padded_size`` plaintext bytes: header plus sealed chunks."""
    chunks = max(1, -(-padded_size // STREAM_CHUNK_SIZE))
    return _STREAM_HEADER.size + padded_size + chunks * _TAG_LENGTH


def _stream_nonce(prefix: bytes, counter: int, *, is_last: bool) -> bytes:
    """The nonce of STREAM chunk ``counter``; the last chunk's carries a flag."""
    if counter >= 2**32:
        raise CryptoError("attachment too large for one stream")
    return prefix + struct.pack(">I", counter) + (b"\x01" if is_last else b"\x00")


class StreamSealer:
    """Encrypt bytes as they arrive, writing only ciphertext to ``sink``.

    Blob: header (version, suite, 7-byte nonce prefix, chunk size) then chunks, each
    AES-256-GCM(key, nonce = prefix || counter || last flag, aad = header). One full chunk is held
    back until more data arrives, so that the final chunk can carry the last flag. ``finish``
    zero-pads the plaintext to ``padded_attachment_length(size)`` before closing the stream.
    """

    def __init__(self, key: bytes, *, sink: BinaryIO, nonce_prefix: bytes | None = None) -> None:
        """Start a stream under ``key`` (an ``attachment_key``) and write its header."""
        prefix = secrets.token_bytes(STREAM_PREFIX_LENGTH) if nonce_prefix is None else nonce_prefix
        if len(prefix) != STREAM_PREFIX_LENGTH:
            raise CryptoError("a stream nonce prefix is 7 bytes")
        self._aead = AESGCM(key)
        self._prefix = prefix
        self._header = _STREAM_HEADER.pack(
            FORMAT_VERSION, STREAM_SUITE_AES256GCM_64K, prefix, STREAM_CHUNK_SIZE
        )
        self._sink = sink
        self._buffer = bytearray()
        self._counter = 0
        self._size = 0
        self._finished = False
        sink.write(self._header)

    @property
    def size(self) -> int:
        """Plaintext bytes written so far (before padding)."""
        return self._size

    def write(self, data: bytes) -> int:
        """Add plaintext; full chunks are encrypted and written at once."""
        if self._finished:
            raise CryptoError("the stream is already finished")
        self._buffer += data
        self._size += len(data)
        while len(self._buffer) > STREAM_CHUNK_SIZE:
            self._emit(bytes(self._buffer[:STREAM_CHUNK_SIZE]), is_last=False)
            del self._buffer[:STREAM_CHUNK_SIZE]
        return len(data)

    def finish(self) -> int:
        """Pad, encrypt the rest with the last flag on the final chunk; return the padded size."""
        padded = padded_attachment_length(self._size)
        padding = padded - self._size
        while padding:
            step = min(padding, STREAM_CHUNK_SIZE)
            self._buffer += bytes(step)
            padding -= step
            while len(self._buffer) > STREAM_CHUNK_SIZE:
                self._emit(bytes(self._buffer[:STREAM_CHUNK_SIZE]), is_last=False)
                del self._buffer[:STREAM_CHUNK_SIZE]
        self._emit(bytes(self._buffer), is_last=True)
        self._buffer.clear()
        self._finished = True
        return padded

    def _emit(self, chunk: bytes, *, is_last: bool) -> None:
        """Encrypt one chunk under the next nonce and write it to the sink."""
        nonce = _stream_nonce(self._prefix, self._counter, is_last=is_last)
        self._sink.write(self._aead.encrypt(nonce, chunk, self._header))
        self._counter += 1


def open_stream(source: BinaryIO, *, key: bytes, sink: BinaryIO, size: int) -> None:
    """Decrypt a STREAM blob from ``source``; write the first ``size`` plaintext bytes to ``sink``.

    Raises DecryptionError if any chunk was flipped, reordered, dropped, added or truncated, and
    FormatError for an unknown header. Padding beyond ``size`` must be zero.
    """
    header = source.read(_STREAM_HEADER.size)
    if len(header) != _STREAM_HEADER.size:
        raise FormatError("attachment is truncated")
    version, suite, prefix, chunk_size = _STREAM_HEADER.unpack(header)
    if version != FORMAT_VERSION or suite != STREAM_SUITE_AES256GCM_64K:
        raise FormatError("attachment has an unsupported version or suite")
    if chunk_size != STREAM_CHUNK_SIZE:
        raise FormatError("attachment has an unsupported chunk size")
    aead = AESGCM(key)
    sealed_chunk = STREAM_CHUNK_SIZE + _TAG_LENGTH
    remaining = size
    counter = 0
    current = source.read(sealed_chunk)
    while True:
        following = source.read(sealed_chunk)
        is_last = not following
        nonce = _stream_nonce(prefix, counter, is_last=is_last)
        try:
            plain = aead.decrypt(nonce, current, header)
        except InvalidTag as exc:
            raise DecryptionError(
                "attachment failed authentication (altered or reordered)"
            ) from exc
        keep = plain[:remaining]
        if any(plain[len(keep) :]):
            raise FormatError("attachment padding is not zero")
        sink.write(keep)
        remaining -= len(keep)
        if is_last:
            break
        current = following
        counter += 1
    if remaining:
        raise DecryptionError("attachment is shorter than its recorded size")


def encrypt_chunks_unframed(key: bytes, data: bytes, *, chunk_size: int = STREAM_CHUNK_SIZE) -> int:
    """AES-256-GCM over ``data`` in chunks with counter nonces and nothing else (no header, no
    padding, no hashing): the physical floor that ``bench/seal_attachment.py`` compares STREAM
    sealing against. Returns the ciphertext length; never use it to store anything."""
    aead = AESGCM(key)
    total = 0
    for counter, start in enumerate(range(0, len(data), chunk_size)):
        nonce = struct.pack(">4xQ", counter)
        total += len(aead.encrypt(nonce, data[start : start + chunk_size], None))
    return total


# --------------------------------------------------------------------------- receipts


def new_receipt() -> str:
    """Return a new receipt: 28 random Crockford base32 symbols (140 bits) in groups of 4."""
    symbols = "".join(secrets.choice(CROCKFORD_ALPHABET) for _ in range(RECEIPT_SYMBOLS))
    return format_receipt(symbols)


def format_receipt(symbols: str) -> str:
    """Group canonical receipt symbols in fours, separated by dashes."""
    return "-".join(symbols[i : i + RECEIPT_GROUP] for i in range(0, len(symbols), RECEIPT_GROUP))


_CROCKFORD_CONFUSIONS = str.maketrans({"I": "1", "L": "1", "O": "0", "U": "V"})
# Cyrillic letters that look like Latin ones, as typed on a Russian or Serbian keyboard layout.
_CYRILLIC_LOOKALIKES = str.maketrans(
    {
        "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
        "С": "C", "Т": "T", "Х": "X", "У": "Y", "З": "3", "Ј": "J",
        "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
        "с": "c", "т": "t", "х": "x", "у": "y", "з": "3", "ј": "j",
    }
)  # fmt: skip
_RECEIPT_SEPARATORS = frozenset("-_.\u2010\u2011\u2012\u2013\u2014\u2212")


def normalize_receipt(text: str) -> str:
    """Return the canonical 28-symbol receipt, forgiving the typing mistakes people make.

    Accepted: any case, whitespace (including non-breaking spaces) and dashes anywhere, I/L for
    1, O for 0, U for V, and Cyrillic letters that look like Latin ones. Anything else non-ASCII,
    a wrong length or a symbol outside the alphabet raises ReceiptError.
    """
    kept = [
        ch
        for ch in text.translate(_CYRILLIC_LOOKALIKES)
        if not ch.isspace() and ch not in _RECEIPT_SEPARATORS
    ]
    if any(not ch.isascii() for ch in kept):
        raise ReceiptError("not a receipt code")
    cleaned = "".join(kept).upper().translate(_CROCKFORD_CONFUSIONS)
    if len(cleaned) != RECEIPT_SYMBOLS or any(ch not in CROCKFORD_ALPHABET for ch in cleaned):
        raise ReceiptError("not a receipt code")
    return cleaned


@dataclass(frozen=True)
class WitnessSecrets:
    """Values derived from a receipt: the lookup token and the witness's own key."""

    lookup_token: bytes = field(repr=False)
    witness_key: PrivateKey = field(repr=False)


def derive_witness_secrets(receipt: str) -> WitnessSecrets:
    """Derive the domain-separated lookup token and X-Wing witness key from a receipt."""
    ikm = normalize_receipt(receipt).encode("ascii")

    def expand(label: bytes) -> bytes:
        """Derive a 32-byte value for ``label`` from the receipt (HKDF-SHA256)."""
        return HKDF(
            algorithm=hashes.SHA256(), length=32, salt=LABEL_RECEIPT_SALT, info=label
        ).derive(ikm)

    return WitnessSecrets(
        lookup_token=expand(LABEL_RECEIPT_LOOKUP),
        witness_key=PrivateKey(suite=SUITE_XWING, seed=expand(LABEL_RECEIPT_WITNESS_KEY)),
    )


def lookup_hash(lookup_token: bytes, *, secret: bytes) -> bytes:
    """Keyed hash of a lookup token, as stored on the server (HMAC-SHA256 with a server secret)."""
    return hmac.new(secret, lookup_token, hashlib.sha256).digest()


# --------------------------------------------------------------------------- seed backups


def split_seed(private_key: PrivateKey, *, threshold: int = 3, shares: int = 5) -> list[str]:
    """Split the key seed into SLIP-39 word shares (default 3-of-5) for a paper backup."""
    import shamir_mnemonic

    groups = shamir_mnemonic.generate_mnemonics(
        group_threshold=1,
        groups=[(threshold, shares)],
        master_secret=private_key.seed,
        passphrase=b"",
    )
    return list(groups[0])


def combine_seed(mnemonics: Iterable[str], *, suite: int = SUITE_XWING) -> PrivateKey:
    """Rebuild a private key from at least the threshold of SLIP-39 shares; else FormatError."""
    import shamir_mnemonic

    shares = list(dict.fromkeys(" ".join(m.split()).lower() for m in mnemonics if m.strip()))
    try:
        if shares:
            # SLIP-39 wants exactly the threshold; extra shares of the same set are redundant.
            threshold = shamir_mnemonic.share.Share.from_mnemonic(shares[0]).member_threshold
            shares = shares[:threshold]
        seed = shamir_mnemonic.combine_mnemonics(shares, passphrase=b"")
    except shamir_mnemonic.MnemonicError as exc:
        raise FormatError(f"the shares do not combine: {exc}") from exc
    return PrivateKey(suite=suite, seed=seed)


def random_passphrase(words: int = 6) -> str:
    """Return a random passphrase of lowercase base32 groups (for generated demo keys only)."""
    return "-".join(base64.b32encode(os.urandom(5)).decode("ascii").lower() for _ in range(words))
