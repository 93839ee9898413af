"""Tests of the attachment STREAM format (``incidents.crypto``): round trips, padding, integrity.

Only ``incidents.crypto`` is imported: no Flask app. A stream is a 13-byte header (version,
suite, 7-byte nonce prefix, chunk size) followed by AES-256-GCM chunks of 64 KiB plaintext each
(65,552 bytes sealed), the last one flagged in its nonce. Every way of damaging a stored
attachment must end in ``DecryptionError`` or ``FormatError``, never in a bare ``InvalidTag``
and never in output that looks valid.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from incidents import crypto

CHUNK = crypto.STREAM_CHUNK_SIZE
SEALED_CHUNK = CHUNK + 16
HEADER = 13
DATA_KEY = bytes(range(32))
OTHER_DATA_KEY = bytes(range(1, 33))
ATTACHMENT_ID = uuid.UUID("5f0b7c1e-2d4a-4e6b-9c8d-1a2b3c4d5e6f")
OTHER_ATTACHMENT_ID = uuid.UUID("0e9d8c7b-6a5f-4e3d-8c2b-1a0f9e8d7c6b")
KEY = crypto.attachment_key(DATA_KEY, attachment_id=ATTACHMENT_ID)
DAMAGED = (crypto.DecryptionError, crypto.FormatError)

BOUNDARY_SIZES = sorted({max(0, k * CHUNK + d) for k in range(5) for d in (-1, 0, 1)})
sizes = st.one_of(st.sampled_from(BOUNDARY_SIZES), st.integers(min_value=0, max_value=5 * CHUNK))


def content(size: int, *, seed: int = 0) -> bytes:
    """Reproducible non-zero-looking bytes of ``size`` (random content, not a pattern)."""
    return random.Random(seed).randbytes(size)  # noqa: S311 - test content, not a secret


def seal(
    data: bytes, *, key: bytes = KEY, pieces: list[int] | None = None, prefix: bytes | None = None
) -> bytes:
    """Seal ``data`` with StreamSealer, writing it in pieces of the given sizes (cycled)."""
    sink = io.BytesIO()
    sealer = crypto.StreamSealer(key, sink=sink, nonce_prefix=prefix)
    steps = pieces or [len(data) or 1]
    position, index = 0, 0
    while position < len(data):
        step = steps[index % len(steps)]
        sealer.write(data[position : position + step])
        position += step
        index += 1
    padded = sealer.finish()
    assert padded == crypto.padded_attachment_length(len(data))
    assert sealer.size == len(data)
    return sink.getvalue()


def open_blob(blob: bytes, *, size: int, key: bytes = KEY) -> bytes:
    """Open a sealed stream and return the first ``size`` plaintext bytes."""
    sink = io.BytesIO()
    crypto.open_stream(io.BytesIO(blob), key=key, sink=sink, size=size)
    return sink.getvalue()


def chunks_of(blob: bytes) -> tuple[bytes, list[bytes]]:
    """Split a sealed stream into its header and its sealed chunks."""
    body = blob[HEADER:]
    return blob[:HEADER], [body[i : i + SEALED_CHUNK] for i in range(0, len(body), SEALED_CHUNK)]


def expected_sealed_length(size: int) -> int:
    """Header plus the padded plaintext plus one 16-byte tag per (possibly short) chunk."""
    padded = crypto.padded_attachment_length(size)
    return HEADER + padded + 16 * -(-padded // CHUNK)


@functools.cache
def four_chunk_stream() -> tuple[bytes, bytes]:
    """A stream of a 200,000-byte file: padded to 4 chunks (the last one short)."""
    data = content(200_000, seed=4)
    return data, seal(data)


# --------------------------------------------------------------------------- round trips


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=sizes,
    pieces=st.lists(st.integers(min_value=1, max_value=3 * CHUNK), min_size=1, max_size=8),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_any_size_written_in_any_pieces_opens_to_the_same_bytes(
    size: int, pieces: list[int], seed: int
) -> None:
    data = content(size, seed=seed)
    blob = seal(data, pieces=pieces)
    assert open_blob(blob, size=size) == data
    assert len(blob) == expected_sealed_length(size)


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_sizes_at_chunk_boundaries_round_trip(size: int) -> None:
    data = content(size, seed=size)
    assert open_blob(seal(data), size=size) == data


def test_an_empty_file_is_one_padded_chunk() -> None:
    blob = seal(b"")
    assert len(blob) == HEADER + CHUNK + 16
    assert open_blob(blob, size=0) == b""


def test_the_same_file_seals_differently_each_time() -> None:
    data = content(1000)
    assert seal(data) != seal(data)


def test_the_header_names_version_suite_prefix_and_chunk_size() -> None:
    prefix = bytes(range(7))
    blob = seal(b"evidence", prefix=prefix)
    assert blob[:HEADER] == bytes([1, 1]) + prefix + struct.pack(">I", CHUNK)


def test_the_ciphertext_does_not_contain_the_plaintext() -> None:
    marker = b"MARKER-b2f1c0ffee-" * 4000
    blob = seal(marker)
    assert b"MARKER-b2f1c0ffee" not in blob


def test_writing_after_finish_is_refused() -> None:
    sealer = crypto.StreamSealer(KEY, sink=io.BytesIO())
    sealer.write(b"abc")
    sealer.finish()
    with pytest.raises(crypto.CryptoError):
        sealer.write(b"more")


def test_attachment_keys_differ_per_attachment_and_per_data_key() -> None:
    keys = {
        crypto.attachment_key(DATA_KEY, attachment_id=ATTACHMENT_ID),
        crypto.attachment_key(DATA_KEY, attachment_id=OTHER_ATTACHMENT_ID),
        crypto.attachment_key(OTHER_DATA_KEY, attachment_id=ATTACHMENT_ID),
    }
    assert len(keys) == 3
    assert crypto.attachment_key(DATA_KEY, attachment_id=ATTACHMENT_ID) == KEY
    assert KEY != DATA_KEY


# --------------------------------------------------------------------------- padded sizes


@given(size=st.integers(min_value=0, max_value=1 << 34))
def test_padded_length_is_the_floor_or_padme(size: int) -> None:
    padded = crypto.padded_attachment_length(size)
    assert padded == max(64 * 1024, crypto.padme_length(size))
    assert padded >= size
    assert crypto.padded_attachment_length(padded) == padded
    # PADME overhead stays under 12% once past the floor
    if size > 64 * 1024:
        assert padded - size <= size * 0.12


@pytest.mark.parametrize(
    ("size", "padded"),
    [
        (0, 65536),
        (1, 65536),
        (65535, 65536),
        (65536, 65536),
        (65537, 67584),
        (1_000_000, 1_015_808),
        (20 * 1024 * 1024, 20 * 1024 * 1024),
        (20 * 1024 * 1024 + 1, 20 * 1024 * 1024 + 512 * 1024),
    ],
)
def test_padded_length_examples(size: int, padded: int) -> None:
    assert crypto.padded_attachment_length(size) == padded


def test_files_in_one_bucket_give_ciphertexts_of_one_length() -> None:
    lengths = {len(seal(content(size))) for size in (1, 100, 40_000, 65_536)}
    assert lengths == {HEADER + CHUNK + 16}


# --------------------------------------------------------------------------- integrity


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_a_flipped_byte_anywhere_is_detected(data: st.DataObject) -> None:
    plain, blob = four_chunk_stream()
    position = data.draw(st.integers(min_value=0, max_value=len(blob) - 1), label="position")
    bit = data.draw(st.integers(min_value=0, max_value=7), label="bit")
    damaged = bytearray(blob)
    damaged[position] ^= 1 << bit
    with pytest.raises(DAMAGED):
        open_blob(bytes(damaged), size=len(plain))


@pytest.mark.parametrize("position", [0, 1, 2, 8, 9, 12, HEADER, HEADER + CHUNK, -1])
def test_a_flipped_byte_in_header_first_chunk_tag_or_last_byte_is_detected(position: int) -> None:
    plain, blob = four_chunk_stream()
    damaged = bytearray(blob)
    damaged[position] ^= 0x01
    with pytest.raises(DAMAGED):
        open_blob(bytes(damaged), size=len(plain))


@pytest.mark.parametrize("first", [0, 1, 2])
def test_a_reordered_pair_of_chunks_is_detected(first: int) -> None:
    plain, blob = four_chunk_stream()
    header, chunks = chunks_of(blob)
    assert len(chunks) == 4
    chunks[first], chunks[first + 1] = chunks[first + 1], chunks[first]
    with pytest.raises(crypto.DecryptionError):
        open_blob(header + b"".join(chunks), size=len(plain))


@pytest.mark.parametrize("dropped", [0, 1, 2, 3], ids=["first", "middle", "middle-2", "last"])
def test_a_dropped_chunk_is_detected(dropped: int) -> None:
    plain, blob = four_chunk_stream()
    header, chunks = chunks_of(blob)
    del chunks[dropped]
    with pytest.raises(crypto.DecryptionError):
        open_blob(header + b"".join(chunks), size=len(plain))


def test_a_dropped_chunk_of_pure_padding_is_detected() -> None:
    # Past 4 MiB, PADME rounds up by 128 KiB: a file of 4 MiB + 1 byte ends in a chunk that
    # holds only padding. Dropping it leaves every byte of the file, and must still fail.
    data = content(4 * 1024 * 1024 + 1, seed=8)
    header, chunks = chunks_of(seal(data))
    assert len(chunks) == 66
    assert len(data) <= 65 * CHUNK
    with pytest.raises(crypto.DecryptionError):
        open_blob(header + b"".join(chunks[:-1]), size=len(data))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_a_truncated_stream_is_detected(data: st.DataObject) -> None:
    plain, blob = four_chunk_stream()
    cut = data.draw(st.integers(min_value=0, max_value=len(blob) - 1), label="cut")
    with pytest.raises(DAMAGED):
        open_blob(blob[:cut], size=len(plain))


@pytest.mark.parametrize("cut", [0, 5, HEADER, HEADER + 10, HEADER + SEALED_CHUNK, -1])
def test_truncation_at_the_edges_is_detected(cut: int) -> None:
    plain, blob = four_chunk_stream()
    with pytest.raises(DAMAGED):
        open_blob(blob[:cut], size=len(plain))


@pytest.mark.parametrize(
    "extra",
    ["copy-of-first", "copy-of-last", "random-chunk", "one-byte"],
)
def test_an_appended_chunk_is_detected(extra: str) -> None:
    plain, blob = four_chunk_stream()
    _header, chunks = chunks_of(blob)
    appended = {
        "copy-of-first": chunks[0],
        "copy-of-last": chunks[-1],
        "random-chunk": content(SEALED_CHUNK, seed=9),
        "one-byte": b"\x00",
    }[extra]
    with pytest.raises(crypto.DecryptionError):
        open_blob(blob + appended, size=len(plain))


def test_a_chunk_from_another_stream_under_the_same_key_is_detected() -> None:
    plain, blob = four_chunk_stream()
    _other_header, other_chunks = chunks_of(seal(content(len(plain), seed=5)))
    header, chunks = chunks_of(blob)
    chunks[1] = other_chunks[1]
    with pytest.raises(crypto.DecryptionError):
        open_blob(header + b"".join(chunks), size=len(plain))


def test_the_header_of_another_stream_is_detected() -> None:
    plain, blob = four_chunk_stream()
    other = seal(content(len(plain), seed=6))
    with pytest.raises(crypto.DecryptionError):
        open_blob(other[:HEADER] + blob[HEADER:], size=len(plain))


def test_a_wrong_key_is_detected() -> None:
    plain, blob = four_chunk_stream()
    wrong = crypto.attachment_key(OTHER_DATA_KEY, attachment_id=ATTACHMENT_ID)
    with pytest.raises(crypto.DecryptionError):
        open_blob(blob, size=len(plain), key=wrong)


def test_a_key_derived_for_another_attachment_id_is_detected() -> None:
    plain, blob = four_chunk_stream()
    moved = crypto.attachment_key(DATA_KEY, attachment_id=OTHER_ATTACHMENT_ID)
    with pytest.raises(crypto.DecryptionError):
        open_blob(blob, size=len(plain), key=moved)


def test_the_data_key_itself_does_not_open_an_attachment() -> None:
    plain, blob = four_chunk_stream()
    with pytest.raises(crypto.DecryptionError):
        open_blob(blob, size=len(plain), key=DATA_KEY)


@pytest.mark.parametrize(
    ("offset", "value", "what"),
    [
        (0, 2, "version"),
        (0, 0, "version"),
        (1, 2, "suite"),
        (1, 0, "suite"),
        (9, struct.pack(">I", 32 * 1024), "chunk size"),
        (9, struct.pack(">I", 0), "chunk size"),
    ],
)
def test_an_unknown_header_is_a_format_error(offset: int, value: int | bytes, what: str) -> None:
    plain, blob = four_chunk_stream()
    patch = bytes([value]) if isinstance(value, int) else value
    damaged = blob[:offset] + patch + blob[offset + len(patch) :]
    with pytest.raises(crypto.FormatError, match="unsupported"):
        open_blob(damaged, size=len(plain))


def test_errors_wrap_invalid_tag_instead_of_leaking_it() -> None:
    plain, blob = four_chunk_stream()
    damaged = bytearray(blob)
    damaged[HEADER + 100] ^= 0xFF
    with pytest.raises(crypto.DecryptionError) as caught:
        open_blob(bytes(damaged), size=len(plain))
    assert isinstance(caught.value, crypto.CryptoError)
    assert "InvalidTag" not in str(caught.value)


def test_a_size_larger_than_the_padded_content_is_an_error() -> None:
    plain, blob = four_chunk_stream()
    padded = crypto.padded_attachment_length(len(plain))
    with pytest.raises(crypto.DecryptionError, match="shorter"):
        open_blob(blob, size=padded + 1)


def test_a_size_larger_than_a_small_file_and_its_padding_is_an_error() -> None:
    blob = seal(b"tiny")
    with pytest.raises(crypto.DecryptionError):
        open_blob(blob, size=CHUNK + 1)


def test_non_zero_bytes_after_the_recorded_size_are_refused_as_padding() -> None:
    # What a forger who knows the key but not the recorded size might try: extra content
    # after the end of the file must not be silently dropped.
    blob = seal(b"original evidence" + b"\x01appended")
    with pytest.raises(crypto.FormatError, match="padding"):
        open_blob(blob, size=len(b"original evidence"))


def test_non_zero_padding_in_a_later_chunk_is_refused() -> None:
    data = content(CHUNK + 10, seed=3) + b"\x01"
    blob = seal(data)
    with pytest.raises(crypto.FormatError, match="padding"):
        open_blob(blob, size=CHUNK + 10)


def test_exact_size_opens_and_zero_padding_is_accepted() -> None:
    data = b"x" * 10 + bytes(50)
    blob = seal(data)
    assert open_blob(blob, size=10) == b"x" * 10
