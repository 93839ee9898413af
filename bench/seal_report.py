"""Benchmark: the cost of sealing one witness report, format v1 against one ``gpg`` per record.

Measured in the same run, on the same payload (six sealed fields of a realistic report, about
2,000 characters of mixed Cyrillic and Latin text):

* ``floor``: ``json.dumps`` of the payload, the cost of doing no cryptography at all;
* ``seal``: ``incidents.crypto.seal_report`` to one X-Wing organizer key generated in the run
  (fresh data key, six padded AES-256-GCM fields, one HPKE wrap);
* ``open``: ``incidents.crypto.open_report`` of those reports with the organizer private key;
* ``wrap`` and ``unwrap``: the HPKE part alone (``wrap_data_key``, ``unwrap_data_key``), to
  show how much of sealing and opening is the one X-Wing operation;
* ``gpg``: the historical SecureDrop approach, one ``gpg --encrypt`` subprocess per record on
  the payload serialised as JSON, given on stdin, in a throwaway ``GNUPGHOME``;
* two controls for the baseline: ``gpg --encrypt`` of a 1-byte payload (the fixed cost of
  a gpg call) and ``gpg --version`` (process start-up alone, no keyring).

Warm-up iterations are run and discarded; every figure comes from ``time.perf_counter_ns``
around a single call. The operations are interleaved in blocks of records (see
``measure_interleaved``) so that drift in the machine's speed does not favour one of them.
The plaintext never touches the disk on our path, and ``gpg`` reads it from a pipe. The
temporary GnuPG home (key, trust database, agent sockets) is removed at the end, after its
``gpg-agent`` has been stopped.

Run from the repository root::

    .venv/bin/python bench/seal_report.py [--records N] [--warmup W] [--block B] [--json OUT]
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    # The benchmark runs from a checkout, where the package is not installed.
    sys.path.insert(0, str(REPO_ROOT))

from incidents import crypto  # noqa: E402

Operation = Callable[[int], object]
"""One benchmarked call, given the index of the record it works on."""

DEFAULT_RECORDS = 2000
DEFAULT_WARMUP = 25
DEFAULT_BLOCK = 100
GPG_UID = "bench <bench@example.invalid>"
GPG_KEY_CHOICES = {
    # name: (algo, usage) for --quick-gen-key; future-default is ed25519 + cv25519 in GnuPG 2.2.
    "future-default": ("future-default", "default"),
    "rsa3072": ("rsa3072", "sign,encr"),
}

NARRATIVE = (
    "Вечером 14 ноября после акции у здания Народной скупщины мы с тремя друзьями пошли к "
    "кафе на улице Краља Петра. Примерно в 19:30 к нам подошёл мужчина лет сорока, говорил "
    "по-русски без акцента, и спросил, кто из нас Анна. Он сказал, что «знает, где живёт её "
    "мама в Екатеринбурге», и что «ей лучше вернуться, пока не поздно». Потом он достал "
    "телефон и открыто снимал каждого из нас, а когда мы попросили прекратить, ответил, что "
    "это общественное место. Второй мужчина стоял у машины с белградскими номерами (начало "
    "BG-12…, остальное не разглядели) и тоже снимал. Через двадцать минут они уехали в "
    "сторону Калемегдана. На следующий день матери Анны позвонили из полиции и пригласили "
    "«на беседу» о дочери; ей показали распечатку фотографий с акции. Мы сохранили видео "
    "(38 секунд) и скриншоты переписки. "
    "Posle toga smo otišli u policijsku stanicu u Ulici Majke Jevrosime da prijavimo pretnju, "
    "ali dežurni službenik je rekao da to „nije krivično delo” i nije hteo da primi prijavu "
    "bez ličnih dokumenata svih svedoka. Advokat iz Novog Sada savetovao nam je da sve "
    "zapišemo i da ne objavljujemo snimak dok ne razgovaramo sa pravnom pomoći. "
    "In English for the volunteers: the man knew Anna's nickname from a closed Telegram "
    "chat, which suggests someone in that chat passes information on. We are afraid to go "
    "to the next rally. Anna's residence permit comes up for renewal in January and she "
    "fears the photos will be used against her. Please contact her first, not the others."
)

PAYLOAD: dict[str, str] = {
    "occurred_on": "2026-11-14",
    "place_detail": "у кафе на улице Краља Петра, Београд, около 19:30, терраса",
    "narrative": NARRATIVE,
    "targeted_person": "Анна К., волонтёр антивоенной инициативы",
    "perpetrator_description": (
        "Мужчина около 40 лет, рост примерно 180 см, коротко стриженый, седина на висках, "
        "тёмная куртка с капюшоном, говорил по-русски без акцента. Второй моложе, лет 30, "
        "в бейсболке, стоял у серой Škoda Octavia с белградскими номерами (BG-12…). "
        "Оба снимали на телефон, первый держал в руке папку с бумагами."
    ),
    "contact": "Signal: anna_k.07 (после 18:00, не звонить)",
}


@dataclass(frozen=True)
class Summary:
    """Per-record timing figures for one measured operation."""

    name: str
    records: int
    median_us: float
    p95_us: float
    mean_us: float
    min_us: float
    records_per_second: float
    output_bytes: int | None


def summarize(name: str, samples_ns: list[int], *, output_bytes: int | None) -> Summary:
    """Reduce per-record samples in nanoseconds to median, p95, mean, min and throughput."""
    p95_ns = statistics.quantiles(samples_ns, n=100, method="inclusive")[94]
    return Summary(
        name=name,
        records=len(samples_ns),
        median_us=statistics.median(samples_ns) / 1000,
        p95_us=p95_ns / 1000,
        mean_us=statistics.fmean(samples_ns) / 1000,
        min_us=min(samples_ns) / 1000,
        records_per_second=len(samples_ns) / (sum(samples_ns) / 1e9),
        output_bytes=output_bytes,
    )


def measure_interleaved(
    operations: Mapping[str, Operation], *, records: int, warmup: int, block: int
) -> tuple[dict[str, list[int]], dict[str, list[object]]]:
    """Time ``operation(i)`` for every operation, each call on its own, interleaved in blocks.

    Each operation first runs ``warmup`` untimed calls (indices below ``warmup``). The measured
    indices are then taken ``block`` at a time, and every operation runs its share of a block
    before the next block starts, so a slow spell of the machine lands on all operations alike
    instead of on whichever phase happened to be running. Returns, per operation name, the
    samples in nanoseconds and the results of the measured calls, both in index order.
    """
    for operation in operations.values():
        for index in range(warmup):
            operation(index)
    samples: dict[str, list[int]] = {name: [] for name in operations}
    results: dict[str, list[object]] = {name: [] for name in operations}
    gc.collect()
    for first in range(warmup, warmup + records, block):
        indices = range(first, min(first + block, warmup + records))
        for name, operation in operations.items():
            for index in indices:
                start = time.perf_counter_ns()
                result = operation(index)
                elapsed = time.perf_counter_ns() - start
                samples[name].append(elapsed)
                results[name].append(result)
    return samples, results


def serialize_payload(values: Mapping[str, str]) -> bytes:
    """Serialise the payload as compact UTF-8 JSON, as a gpg-per-record app would."""
    return json.dumps(values, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sealed_size(sealed: crypto.SealedReport) -> int:
    """Total bytes stored for a sealed report: every sealed field plus every wrap."""
    return sum(map(len, sealed.fields.values())) + sum(map(len, sealed.wraps.values()))


# --------------------------------------------------------------------------- gpg baseline


@dataclass(frozen=True)
class GpgKey:
    """A throwaway GnuPG key: where it lives, its fingerprint and a description of it."""

    home: Path
    fingerprint: str
    description: str


def run_gpg(
    home: Path, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``gpg`` with ``GNUPGHOME`` set to ``home``, capturing its output; never raise."""
    env = {**os.environ, "GNUPGHOME": str(home)}
    return subprocess.run(["gpg", *args], input=stdin, capture_output=True, env=env, check=False)


def gpg_version() -> str:
    """Return the first line of ``gpg --version``, e.g. ``gpg (GnuPG) 2.2.40``."""
    result = subprocess.run(["gpg", "--version"], capture_output=True, text=True, check=True)
    return result.stdout.splitlines()[0]


def describe_encryption_key(home: Path) -> tuple[str, str]:
    """Return (primary fingerprint, description of the encryption-capable (sub)key)."""
    listing = run_gpg(home, "--batch", "--with-colons", "--list-keys", GPG_UID)
    if listing.returncode != 0:
        raise RuntimeError("gpg could not list the benchmark key")
    fingerprint = ""
    description = ""
    record_type = ""
    for line in listing.stdout.decode("utf-8").splitlines():
        fields = line.split(":")
        if fields[0] in ("pub", "sub"):
            record_type = fields[0]
            if "e" in fields[11]:
                curve = fields[16] if len(fields) > 16 else ""
                description = curve or f"rsa{fields[2]}"
        elif fields[0] == "fpr" and record_type == "pub" and not fingerprint:
            fingerprint = fields[9]
    if not fingerprint or not description:
        raise RuntimeError("the benchmark key has no encryption-capable (sub)key")
    return fingerprint, description


def generate_gpg_key(home: Path, *, preferred: str) -> GpgKey:
    """Generate an unprotected key in ``home``: ``preferred`` first, then rsa3072 as fallback."""
    names = [preferred, *(name for name in GPG_KEY_CHOICES if name != preferred)]
    for name in names:
        algo, usage = GPG_KEY_CHOICES[name]
        result = run_gpg(
            home, "--batch", "--passphrase", "", "--quick-gen-key", GPG_UID, algo, usage, "never"
        )
        if result.returncode == 0:
            fingerprint, description = describe_encryption_key(home)
            return GpgKey(home=home, fingerprint=fingerprint, description=f"{name}: {description}")
        print(f"gpg --quick-gen-key {algo} failed; trying the next key type", file=sys.stderr)
    raise RuntimeError("gpg could not generate a key of any type")


def gpg_start(key: GpgKey) -> bytes:
    """Start ``gpg --version`` once: process start-up alone, the floor of any gpg call."""
    result = run_gpg(key.home, "--version")
    if result.returncode != 0:
        raise RuntimeError("gpg --version failed")
    return result.stdout


def gpg_encrypt(key: GpgKey, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` to ``key`` with one ``gpg`` process, reading it from stdin."""
    result = run_gpg(
        key.home,
        "--batch",
        "--yes",
        "--trust-model",
        "always",
        "--encrypt",
        "--recipient",
        key.fingerprint,
        stdin=plaintext,
    )
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(f"gpg --encrypt failed: {result.stderr.decode('utf-8', 'replace')}")
    return result.stdout


def gpg_decrypt(key: GpgKey, ciphertext: bytes) -> bytes:
    """Decrypt one gpg ciphertext (used once, untimed, to check the baseline does real work)."""
    result = run_gpg(
        key.home,
        "--batch",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
        "--decrypt",
        stdin=ciphertext,
    )
    if result.returncode != 0:
        raise RuntimeError(f"gpg --decrypt failed: {result.stderr.decode('utf-8', 'replace')}")
    return result.stdout


@contextmanager
def throwaway_gnupg_home() -> Iterator[Path]:
    """Yield a fresh private GNUPGHOME; stop its agent and delete it on exit, even on error."""
    with tempfile.TemporaryDirectory(prefix="bench-gnupg-") as directory:
        home = Path(directory)
        home.chmod(0o700)
        try:
            yield home
        finally:
            # gpg --quick-gen-key and --decrypt start a gpg-agent bound to this home; stop only it.
            subprocess.run(
                ["gpgconf", "--kill", "gpg-agent"],
                env={**os.environ, "GNUPGHOME": str(home)},
                capture_output=True,
                check=False,
            )


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Outcome:
    """Everything one run measured, plus the environment needed to interpret it."""

    date: str
    records: int
    warmup: int
    block: int
    cpus: int | None
    python: str
    cryptography: str
    gpg: str
    gpg_key: str
    payload_chars: int
    payload_json_bytes: int
    floor: Summary
    seal: Summary
    open: Summary
    wrap: Summary
    unwrap: Summary
    gpg_encrypt: Summary
    gpg_tiny: Summary
    gpg_startup: Summary
    ratio_gpg_to_seal_median: float
    ratio_gpg_to_seal_throughput: float


def run_benchmark(*, records: int, warmup: int, block: int, gpg_key_type: str) -> Outcome:
    """Measure floor, seal, open and the gpg baseline on the same payload in one run."""
    crypto.ensure_platform_support()
    payload = dict(PAYLOAD)
    plaintext_json = serialize_payload(payload)
    total = warmup + records

    organizer = crypto.PrivateKey.generate()
    organizer_public = organizer.public_key()
    report_ids = [uuid.uuid4() for _ in range(total)]
    # Inputs for the opening side, prepared untimed so that every operation stands alone.
    data_key = crypto.new_data_key()
    to_open = [
        crypto.seal_report(payload, report_id=report_id, recipients=[organizer_public])
        for report_id in report_ids
    ]
    to_unwrap = [
        crypto.wrap_data_key(data_key, report_id=report_id, recipient=organizer_public)
        for report_id in report_ids
    ]

    with throwaway_gnupg_home() as home:
        gpg_key = generate_gpg_key(home, preferred=gpg_key_type)
        operations: dict[str, Operation] = {
            "floor": lambda _index: serialize_payload(payload),
            "seal": lambda index: crypto.seal_report(
                payload, report_id=report_ids[index], recipients=[organizer_public]
            ),
            "wrap": lambda index: crypto.wrap_data_key(
                data_key, report_id=report_ids[index], recipient=organizer_public
            ),
            "open": lambda index: crypto.open_report(
                to_open[index].fields,
                report_id=report_ids[index],
                wrap=to_open[index].wraps[organizer_public.key_id],
                private_key=organizer,
            ),
            "unwrap": lambda index: crypto.unwrap_data_key(
                to_unwrap[index], report_id=report_ids[index], private_key=organizer
            ),
            "gpg": lambda _index: gpg_encrypt(gpg_key, serialize_payload(payload)),
            "gpg_tiny": lambda _index: gpg_encrypt(gpg_key, b"x"),
            "gpg_startup": lambda _index: gpg_start(gpg_key),
        }
        samples, results = measure_interleaved(
            operations, records=records, warmup=warmup, block=block
        )
        gpg_ciphertexts = cast("list[bytes]", results["gpg"])
        if gpg_decrypt(gpg_key, gpg_ciphertexts[-1]) != plaintext_json:
            raise RuntimeError("the gpg baseline did not round-trip the payload")

    sealed_reports = cast("list[crypto.SealedReport]", results["seal"])
    wraps = cast("list[bytes]", results["wrap"])
    check_our_results(
        payload,
        sealed=sealed_reports[-1],
        opened=cast("list[dict[str, str]]", results["open"]),
        unwrapped=cast("list[bytes]", results["unwrap"]),
        data_key=data_key,
    )
    summaries = {
        "floor": summarize(
            "json.dumps (floor)", samples["floor"], output_bytes=len(plaintext_json)
        ),
        "seal": summarize(
            "format v1 seal_report", samples["seal"], output_bytes=sealed_size(sealed_reports[-1])
        ),
        "open": summarize("format v1 open_report", samples["open"], output_bytes=None),
        "wrap": summarize("  of seal: wrap_data_key", samples["wrap"], output_bytes=len(wraps[-1])),
        "unwrap": summarize("  of open: unwrap_data_key", samples["unwrap"], output_bytes=None),
        "gpg": summarize(
            "gpg --encrypt, 1 process/record",
            samples["gpg"],
            output_bytes=round(statistics.fmean(map(len, gpg_ciphertexts))),
        ),
        "gpg_tiny": summarize(
            "gpg --encrypt, 1-byte payload", samples["gpg_tiny"], output_bytes=None
        ),
        "gpg_startup": summarize(
            "gpg --version (start-up only)", samples["gpg_startup"], output_bytes=None
        ),
    }
    return Outcome(
        date=datetime.now(UTC).date().isoformat(),
        records=records,
        warmup=warmup,
        block=block,
        cpus=os.cpu_count(),
        python=platform.python_version(),
        cryptography=importlib.metadata.version("cryptography"),
        gpg=gpg_version(),
        gpg_key=gpg_key.description,
        payload_chars=sum(map(len, payload.values())),
        payload_json_bytes=len(plaintext_json),
        floor=summaries["floor"],
        seal=summaries["seal"],
        open=summaries["open"],
        wrap=summaries["wrap"],
        unwrap=summaries["unwrap"],
        gpg_encrypt=summaries["gpg"],
        gpg_tiny=summaries["gpg_tiny"],
        gpg_startup=summaries["gpg_startup"],
        ratio_gpg_to_seal_median=summaries["gpg"].median_us / summaries["seal"].median_us,
        ratio_gpg_to_seal_throughput=(
            summaries["seal"].records_per_second / summaries["gpg"].records_per_second
        ),
    )


def check_our_results(
    payload: Mapping[str, str],
    *,
    sealed: crypto.SealedReport,
    opened: list[dict[str, str]],
    unwrapped: list[bytes],
    data_key: bytes,
) -> None:
    """Fail loudly unless every timed open and unwrap returned the right plaintext."""
    if any(values != payload for values in opened):
        raise RuntimeError("open_report did not return the sealed payload")
    if any(key != data_key for key in unwrapped):
        raise RuntimeError("unwrap_data_key did not return the wrapped data key")
    marker = payload["narrative"][:40].encode("utf-8")
    if any(marker in blob for blob in sealed.fields.values()):
        raise RuntimeError("a sealed field contains plaintext")


def format_table(outcome: Outcome) -> str:
    """Render the outcome as a plain-text table with the gpg/ours ratio underneath."""
    header = (
        f"Sealing one witness report: {outcome.records} records after {outcome.warmup} warm-up, "
        f"{outcome.cpus} CPUs, {outcome.date}\n"
        f"Python {outcome.python}, cryptography {outcome.cryptography}, {outcome.gpg} "
        f"(key {outcome.gpg_key})\n"
        f"Payload: 6 fields, {outcome.payload_chars} characters, "
        f"{outcome.payload_json_bytes} bytes as UTF-8 JSON; one X-Wing recipient\n"
    )
    columns = f"{'operation':<34}{'median µs':>11}{'p95 µs':>11}{'mean µs':>11}"
    columns += f"{'records/s':>12}{'out B':>8}"
    rows = [columns, "-" * len(columns)]
    summaries = (
        outcome.floor,
        outcome.seal,
        outcome.open,
        outcome.wrap,
        outcome.unwrap,
        outcome.gpg_encrypt,
        outcome.gpg_tiny,
        outcome.gpg_startup,
    )
    for summary in summaries:
        size = "-" if summary.output_bytes is None else str(summary.output_bytes)
        rows.append(
            f"{summary.name:<34}{summary.median_us:>11.1f}{summary.p95_us:>11.1f}"
            f"{summary.mean_us:>11.1f}{summary.records_per_second:>12,.0f}{size:>8}"
        )
    ratio = (
        f"\nRatio gpg / ours: {outcome.ratio_gpg_to_seal_median:.1f}x by median, "
        f"{outcome.ratio_gpg_to_seal_throughput:.1f}x by throughput"
    )
    return header + "\n" + "\n".join(rows) + "\n" + ratio


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--records",
        type=int,
        default=DEFAULT_RECORDS,
        help=f"measured records per operation (default {DEFAULT_RECORDS})",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=DEFAULT_WARMUP,
        help=f"discarded warm-up records per operation (default {DEFAULT_WARMUP})",
    )
    parser.add_argument(
        "--block",
        type=int,
        default=DEFAULT_BLOCK,
        help=f"records per operation before moving to the next one (default {DEFAULT_BLOCK})",
    )
    parser.add_argument(
        "--gpg-key",
        choices=sorted(GPG_KEY_CHOICES),
        default="future-default",
        help="baseline key type; future-default is ed25519 + cv25519 (default)",
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the figures here")
    arguments = parser.parse_args(argv)
    if arguments.records < 2:
        parser.error("--records must be at least 2 (p95 needs two samples)")
    if arguments.block < 1:
        parser.error("--block must be at least 1")
    if arguments.warmup < 0:
        parser.error("--warmup cannot be negative")
    return arguments


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and optionally write the figures as JSON."""
    arguments = parse_arguments(argv)
    outcome = run_benchmark(
        records=arguments.records,
        warmup=arguments.warmup,
        block=arguments.block,
        gpg_key_type=arguments.gpg_key,
    )
    print(format_table(outcome))
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(asdict(outcome), indent=2) + "\n", encoding="utf-8")
        print(f"\nFigures written to {arguments.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
