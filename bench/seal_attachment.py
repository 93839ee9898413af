"""Benchmark: attachment sealing throughput against raw AES-256-GCM over the same bytes.

Measured in the same run, on the same random payload (default 64 MiB), in 64 KiB writes:

* ``raw AES-GCM``: ``crypto.encrypt_chunks_unframed``, AES-256-GCM over 64 KiB chunks with
  counter nonces and nothing else: the physical floor;
* ``STREAM``: ``crypto.StreamSealer`` alone (header, chunk framing, hold-back of the last chunk,
  padding to the PADME bucket), writing into an in-memory sink;
* ``upload path``: ``uploads.SealingUpload`` as the web request uses it (SHA-256 of the
  original, first megabyte kept for type sniffing, STREAM sealing, ciphertext written to a file
  in a temporary directory, then the content check at the end).

Each variant runs ``--repeat`` times, interleaved; the median is reported as MB/s (10^6 bytes
per second) with the ratio to the floor.

Run from the repository root::

    .venv/bin/python bench/seal_attachment.py [--megabytes N] [--repeat R] [--json OUT]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    # The benchmark runs from a checkout, where the package is not installed.
    sys.path.insert(0, str(REPO_ROOT))

from incidents import crypto, uploads  # noqa: E402

WRITE_SIZE = 64 * 1024


def write_in_pieces(target: Callable[[bytes], object], data: bytes) -> None:
    """Feed ``data`` to ``target`` 64 KiB at a time, as the multipart parser does."""
    view = memoryview(data)
    for start in range(0, len(data), WRITE_SIZE):
        target(bytes(view[start : start + WRITE_SIZE]))


def raw_aead(data: bytes, key: bytes, _directory: Path) -> None:
    """The floor: chunked AES-256-GCM with nothing around it."""
    crypto.encrypt_chunks_unframed(key, data)


def stream_only(data: bytes, key: bytes, _directory: Path) -> None:
    """STREAM sealing into memory."""
    sealer = crypto.StreamSealer(key, sink=io.BytesIO())
    write_in_pieces(sealer.write, data)
    sealer.finish()


def upload_path(data: bytes, key: bytes, directory: Path) -> None:
    """What a witness's upload costs the server: hash, sniff, seal, write ciphertext."""
    batch = uploads.UploadBatch(
        envelope_id=uuid.uuid4(),
        data_key=key,
        directory=directory,
        max_files=5,
        max_bytes=len(data) + 1,
    )
    upload = batch.open_upload("evidence.pdf")
    write_in_pieces(upload.write, data)
    upload.finish()
    if upload.problem is not None:
        raise RuntimeError(f"the benchmark payload was refused: {upload.problem}")
    upload.discard()


VARIANTS: dict[str, Callable[[bytes, bytes, Path], None]] = {
    "raw AES-GCM (floor)": raw_aead,
    "STREAM sealing": stream_only,
    "upload path (hash+sniff+seal+disk)": upload_path,
}


def measure(megabytes: int, repeat: int) -> dict[str, float]:
    """Median seconds per variant over ``repeat`` interleaved rounds."""
    data = b"%PDF-1.7\n" + os.urandom(megabytes * 1024 * 1024 - 9)
    key = os.urandom(32)
    timings: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="bench-attachment-") as tmp:
        directory = Path(tmp)
        for round_number in range(repeat + 1):
            for name, variant in VARIANTS.items():
                started = time.perf_counter()
                variant(data, key, directory)
                elapsed = time.perf_counter() - started
                if round_number:  # round 0 warms caches up and is discarded
                    timings[name].append(elapsed)
    return {name: statistics.median(values) for name, values in timings.items()}


def main() -> None:
    """Run the benchmark and print MB/s with the ratio to the floor."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    medians = measure(args.megabytes, args.repeat)
    size = args.megabytes * 1024 * 1024
    floor = medians["raw AES-GCM (floor)"]
    print(f"Attachment sealing, {args.megabytes} MiB payload, median of {args.repeat} runs")
    print(f"{'variant':<38}{'MB/s':>10}{'× floor time':>14}")
    results = {}
    for name, seconds in medians.items():
        throughput = size / seconds / 1e6
        results[name] = {"seconds": seconds, "mb_per_s": throughput, "ratio": seconds / floor}
        print(f"{name:<38}{throughput:>10.1f}{seconds / floor:>14.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
