"""Benchmark: how many case bundles per second a desk decrypts, against the physical floor.

``--reports`` synthetic case bundles are built in memory, shaped exactly like
``services.bundles.case_bundle`` makes them for one key: a clear shell and status history, the
six sealed fields of a realistic report (``incidents.crypto.seal_report`` to one X-Wing organizer
key generated in the run; a narrative of 1-3 KB of Russian, Serbian Latin and English, the other
fields short), the wrap to that key, the witness's public key and the recipients list, binary
values in base64 (``incidents.bundle.b64``). Each bundle is serialised as the API answers it
(Flask's default JSON provider: ASCII-escaped, sorted keys, compact). Then, in the same run:

* ``desk``: what a desk does per case, ``json.loads`` of the bundle's JSON text and
  ``services.casefile.open_bundle`` with the private key, giving a ``CaseFile``;
* ``cached``: the same from the desk's own cache (``incidents.desk.cache.DeskCache``, a SQLite
  file in a temporary directory, filled beforehand with every bundle as a sync fills it): each
  bundle read with ``case(id)`` (one connection per case, as the desk's case view does) and
  opened; and, once per pass, ``cases()``, which reads and parses every cached bundle at once;
* ``floor``: the least any desk must do to read a report, one X-Wing decapsulation and one
  AES-256-GCM field: ``crypto.unwrap_data_key`` of the wrap and ``crypto.open_field`` of the
  narrative, on raw bytes prepared beforehand (no JSON, no base64);
* parts, to show where the time goes: ``json.loads`` alone, ``open_bundle`` alone (on bundles
  parsed beforehand), ``crypto.open_report`` (the unwrap plus all six fields, raw bytes, no
  base64) and ``crypto.unwrap_data_key`` alone.

A pass runs every operation over every bundle, ``--block`` bundles at a time: each operation
takes the block in turn, in an order that rotates from block to block, so that a slow spell of
the machine lands on all of them alike. ``time.perf_counter_ns`` is read around each call over a
block, and an operation's pass time is the sum over its blocks. One pass is run first and
discarded. Rates are reports divided by the median pass time. Untimed, every opened case and
every floor narrative is checked against the values that were sealed. Everything but the
cache's ciphertext stays in memory; the cache is deleted at the end.

Run from the repository root::

    .venv/bin/python bench/desk_open.py [--reports N] [--repeat R] [--block B] [--json OUT]
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    # The benchmark runs from a checkout, where the package is not installed.
    sys.path.insert(0, str(REPO_ROOT))

from incidents import crypto, vocabulary  # noqa: E402
from incidents.bundle import b64  # noqa: E402
from incidents.desk.cache import DeskCache  # noqa: E402
from incidents.models import SEALED_FIELDS  # noqa: E402
from incidents.services import demo  # noqa: E402
from incidents.services.casefile import CaseFile, open_bundle  # noqa: E402
from incidents.services.reports import ReportShell, occurred_period  # noqa: E402

DEFAULT_REPORTS = 2000
DEFAULT_REPEAT = 5
DEFAULT_BLOCK = 100
SEED = 1
TODAY = date(2026, 11, 25)

NARRATIVE_SENTENCES = (
    "Вечером после акции у здания Народной скупщины мы с друзьями пошли к кафе на улице "
    "Краља Петра, и к нам подошёл мужчина лет сорока, говоривший по-русски без акцента.",
    "Он спросил, кто из нас Анна, и сказал, что «знает, где живёт её мама», и что «ей лучше "
    "вернуться, пока не поздно».",
    "Потом он открыто снимал каждого из нас на телефон, а на просьбу прекратить ответил, что "
    "это общественное место.",
    "Второй мужчина стоял у серой машины с белградскими номерами и тоже снимал; через двадцать "
    "минут они уехали в сторону Калемегдана.",
    "На следующий день моей матери позвонили из полиции и пригласили «на беседу» обо мне; ей "
    "показали распечатку фотографий с акции.",
    "Мы сохранили видео (38 секунд) и скриншоты переписки, но боимся публиковать их до "
    "разговора с юристом.",
    "Posle toga smo otišli u policijsku stanicu da prijavimo pretnju, ali dežurni službenik je "
    "rekao da to „nije krivično delo” i nije hteo da primi prijavu.",
    "Advokat iz Novog Sada savetovao nam je da sve zapišemo i da ne objavljujemo snimak dok ne "
    "razgovaramo sa pravnom pomoći.",
    "Na granici u Horgošu su me zadržali tri sata, pregledali telefon i pitali za imena ljudi "
    "sa kojima organizujem skupove.",
    "The man knew my nickname from a closed Telegram chat, which suggests someone in that chat "
    "passes information on.",
    "My residence permit comes up for renewal in January and I fear the photos will be used "
    "against me at the migration office.",
    "An unknown number called my employer twice last week and asked whether I 'still work with "
    "those people'; my manager told me to be careful.",
    "Someone tried to log in to my e-mail from an address in Moscow the same night, and the "
    "password of my Telegram account was reset without my request.",
    "Please contact me first and not the others; they are afraid to go to the next rally.",
)
PLACES = (
    "у кафе на улице Краља Петра, Београд, около 19:30, терраса",
    "ispred ambasade, Bulevar kneza Aleksandra Karađorđevića",
    "Tbilisi, near the metro exit on Rustaveli Avenue",
    "на пограничном пункте, в очереди на паспортный контроль",
)
TARGETS = ("я сама", "Анна К., волонтёр антивоенной инициативы", "moj brat", "a colleague")
PERPETRATORS = (
    "Мужчина около 40 лет, рост примерно 180 см, коротко стриженый, тёмная куртка с капюшоном.",
    "Dva muškarca u sivoj Škodi Octavii sa beogradskim tablicama, oba su snimala telefonom.",
    "A caller who introduced himself as 'from the consulate' and knew my address.",
    "",
)
CONTACTS = ("Signal: anna_k.07 (после 18:00, не звонить)", "Threema: 4K7PX2QM", "")


# --------------------------------------------------------------------------- synthetic bundles


@dataclass(frozen=True)
class Prepared:
    """One synthetic case: what was sealed, its bundle as API JSON, and the floor's inputs."""

    report_id: uuid.UUID
    values: dict[str, str]
    body: bytes
    wrap: bytes
    narrative_blob: bytes
    sealed_fields: dict[str, bytes]


def narrative_text(rng: random.Random) -> str:
    """A narrative of random sentences, about 1-3 KB as UTF-8 (a random target, whole sentences)."""
    target = rng.randint(1024, 3072)
    parts: list[str] = []
    while len(" ".join(parts).encode("utf-8")) < target:
        parts.append(rng.choice(NARRATIVE_SENTENCES))
    return " ".join(parts)


def sealed_values(rng: random.Random, occurred_on: date) -> dict[str, str]:
    """Realistic values of the six sealed fields, named as ``models.SEALED_FIELDS``."""
    values = {
        "occurred_on": occurred_on.isoformat(),
        "place_detail": rng.choice(PLACES),
        "narrative": narrative_text(rng),
        "targeted_person": rng.choice(TARGETS),
        "perpetrator_description": rng.choice(PERPETRATORS),
        "contact": rng.choice(CONTACTS),
    }
    if tuple(values) != SEALED_FIELDS:
        raise RuntimeError("the benchmark's fields no longer match models.SEALED_FIELDS")
    return values


def api_json(document: object) -> bytes:
    """Serialise as Flask's default JSON provider answers outside debug mode."""
    return json.dumps(document, ensure_ascii=True, sort_keys=True, separators=(",", ":")).encode()


def make_case(
    rng: random.Random, *, organizer: crypto.PrivateKey, recipients: list[dict[str, str]]
) -> Prepared:
    """Seal one synthetic report to ``organizer`` and build its bundle like ``case_bundle``."""
    report_id = uuid.uuid4()
    draft = demo.synthetic_draft(rng, today=TODAY, months=24)
    values = sealed_values(rng, draft.occurred_on)
    sealed = crypto.seal_report(values, report_id=report_id, recipients=[organizer.public_key()])
    wrap = sealed.wraps[organizer.key_id]
    received_on = min(TODAY, draft.occurred_on + timedelta(days=rng.randrange(0, 30)))
    status = rng.choice(["new", "triaged", "assigned", "in_progress", "closed"])
    shell = ReportShell(
        id=str(report_id),
        received_on=received_on.isoformat(),
        status=status,
        category=draft.category,
        occurred_period=occurred_period(draft.occurred_on, draft.date_precision),
        date_precision=draft.date_precision,
        country=draft.country,
        city=draft.city,
        geo_precision=vocabulary.geo_precision(draft.country, draft.city),
        perpetrator_type=draft.perpetrator_type,
        consent_contact=bool(values["contact"]),
        consent_statistics=draft.consent_statistics,
    )
    history = (
        []
        if status == "new"
        else [
            {
                "on": received_on.isoformat(),
                "from": "new",
                "to": status,
                "by": "organizer",
                "reason": "",
            }
        ]
    )
    bundle = {
        "report_id": str(report_id),
        "shell": shell.to_dict(),
        "status_history": history,
        "sealed": {name: b64(blob) for name, blob in sealed.fields.items()},
        "wrap": b64(wrap),
        "witness_public_key": b64(crypto.PrivateKey.generate().public_key().to_bytes()),
        "additions": [],
        "replies": [],
        "notes": [],
        "attachments": [],
        "recipients": recipients,
    }
    body = api_json(bundle)
    if json.loads(body) != bundle:
        raise RuntimeError("the bundle does not survive the JSON round trip")
    return Prepared(
        report_id=report_id,
        values=values,
        body=body,
        wrap=wrap,
        narrative_blob=sealed.fields["narrative"],
        sealed_fields=dict(sealed.fields),
    )


def organizer_recipients(organizer: crypto.PublicKey) -> list[dict[str, str]]:
    """The bundle's recipients list for a single organizer key, as ``note_recipients`` makes it."""
    return [
        {
            "key_id": organizer.key_id_hex,
            "role": "organizer",
            "username": "",
            "public_key": b64(organizer.to_bytes()),
            "fingerprint": organizer.fingerprint,
        }
    ]


# --------------------------------------------------------------------------- the operations


Operation = Callable[[range], list[Any]]
"""One timed call over a block of cases, given their indices; returns what each case gave."""


def operations(
    cases: list[Prepared], organizer: crypto.PrivateKey, cache: DeskCache
) -> dict[str, Operation]:
    """The operations measured block by block, by short name (``cache`` holds every bundle)."""
    parsed = [json.loads(case.body) for case in cases]  # for open_bundle alone, made untimed

    def desk(indices: range) -> list[Any]:
        return [open_bundle(json.loads(cases[i].body), private_key=organizer) for i in indices]

    def cached(indices: range) -> list[Any]:
        opened = []
        for i in indices:
            bundle = cache.case(str(cases[i].report_id))
            if bundle is None:
                raise RuntimeError("a bundle is missing from the desk cache")
            opened.append(open_bundle(bundle, private_key=organizer))
        return opened

    def floor(indices: range) -> list[Any]:
        opened = []
        for i in indices:
            case = cases[i]
            data_key = crypto.unwrap_data_key(
                case.wrap, report_id=case.report_id, private_key=organizer
            )
            opened.append(
                crypto.open_field(
                    case.narrative_blob,
                    data_key=data_key,
                    report_id=case.report_id,
                    name="narrative",
                )
            )
        return opened

    def parse(indices: range) -> list[Any]:
        return [json.loads(cases[i].body) for i in indices]

    def open_parsed(indices: range) -> list[Any]:
        return [open_bundle(parsed[i], private_key=organizer) for i in indices]

    def open_report(indices: range) -> list[Any]:
        return [
            crypto.open_report(
                cases[i].sealed_fields,
                report_id=cases[i].report_id,
                wrap=cases[i].wrap,
                private_key=organizer,
            )
            for i in indices
        ]

    def unwrap(indices: range) -> list[Any]:
        return [
            crypto.unwrap_data_key(
                cases[i].wrap, report_id=cases[i].report_id, private_key=organizer
            )
            for i in indices
        ]

    return {
        "desk": desk,
        "cached": cached,
        "floor": floor,
        "parse": parse,
        "open_parsed": open_parsed,
        "open_report": open_report,
        "unwrap": unwrap,
    }


LABELS = {
    "desk": "desk: json.loads + open_bundle",
    "cached": "cached: cache.case(id) + open_bundle",
    "floor": "floor: unwrap + open narrative",
    "parse": "  of desk: json.loads",
    "open_parsed": "  of desk: open_bundle",
    "open_report": "  of desk: open_report (6 fields)",
    "unwrap": "  of floor: unwrap_data_key",
    "cache_all": "cache.cases(), every bundle at once",
}


Check = Callable[[str, range, list[Any]], None]
"""Untimed check of what one operation gave for the cases at the given indices."""


def measure(
    blockwise: Mapping[str, Operation],
    whole: Mapping[str, Callable[[], list[Any]]],
    *,
    count: int,
    block: int,
    repeat: int,
    check: Check,
) -> dict[str, list[int]]:
    """Time one discarded round and ``repeat`` rounds; return each round's totals in ns.

    In a round, each ``whole`` operation runs once over everything, then the cases are taken
    ``block`` at a time and every ``blockwise`` operation runs over the block, in an order that
    rotates from block to block, so that a slow spell of the machine lands on all of them alike.
    What each call gave is checked untimed and dropped at once, so that the heap (and the
    garbage collector's work) does not grow with the results of earlier blocks.
    """
    names = list(blockwise)
    samples: dict[str, list[int]] = {name: [] for name in [*names, *whole]}
    for round_number in range(repeat + 1):
        totals = dict.fromkeys(samples, 0)
        gc.collect()
        for name, run_whole in whole.items():
            start = time.perf_counter_ns()
            result = run_whole()
            totals[name] += time.perf_counter_ns() - start
            check(name, range(count), result)
        for block_number, first in enumerate(range(0, count, block)):
            indices = range(first, min(first + block, count))
            shift = (round_number + block_number) % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter_ns()
                result = blockwise[name](indices)
                totals[name] += time.perf_counter_ns() - start
                check(name, indices, result)
            del result
        if round_number:  # round 0 warms caches up and is discarded
            for name, total in totals.items():
                samples[name].append(total)
    return samples


def checker(cases: list[Prepared]) -> Check:
    """A check that fails loudly unless an operation gave exactly what was sealed."""

    def check(name: str, indices: range, result: list[Any]) -> None:
        if len(result) != len(indices):
            raise RuntimeError(f"{name} gave {len(result)} results for {len(indices)} cases")
        if name == "cache_all":
            stored = {bundle["report_id"]: bundle for bundle in result}
            if any(stored.get(str(case.report_id)) != json.loads(case.body) for case in cases):
                raise RuntimeError("cache.cases() did not return every bundle as it was stored")
            return
        for i, value in zip(indices, result, strict=True):
            case = cases[i]
            if name in ("desk", "cached", "open_parsed"):
                opened = cast("CaseFile", value)
                if opened.sealed != case.values or opened.shell.id != str(case.report_id):
                    raise RuntimeError(f"{name} did not open the sealed report")
            elif name == "floor" and value != case.values["narrative"]:
                raise RuntimeError("the floor did not open the sealed narrative")
            elif name == "open_report" and value != case.values:
                raise RuntimeError("open_report did not return the sealed values")
            elif name == "unwrap" and len(value) != 32:
                raise RuntimeError("unwrap_data_key did not return a data key")
            elif name == "parse" and value["report_id"] != str(case.report_id):
                raise RuntimeError("json.loads did not return the bundle")

    return check


def check_no_plaintext(cases: list[Prepared]) -> None:
    """Fail loudly if a bundle or a sealed narrative contains the narrative's plaintext."""
    for case in cases:
        marker = case.values["narrative"][:40]
        if marker.encode("utf-8") in case.narrative_blob or api_json([marker])[2:-2] in case.body:
            raise RuntimeError("a bundle contains plaintext")


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Timing:
    """One operation's pass times over every report, reduced."""

    name: str
    median_s: float
    min_s: float
    max_s: float
    reports_per_second: float
    us_per_report: float


@dataclass(frozen=True)
class Outcome:
    """Everything one run measured, plus the environment needed to interpret it."""

    date: str
    reports: int
    repeat: int
    block: int
    cpus: int | None
    python: str
    cryptography: str
    narrative_bytes_min: int
    narrative_bytes_max: int
    bundle_json_bytes_mean: float
    setup_s: float
    timings: dict[str, Timing]
    ratio_desk_to_floor: float
    ratio_desk_to_floor_per_round: list[float]


def run_benchmark(*, reports: int, repeat: int, block: int) -> Outcome:
    """Build the bundles, then measure and check every operation, interleaved."""
    crypto.ensure_platform_support()
    rng = random.Random(SEED)  # noqa: S311 - synthetic data, not secrets
    organizer = crypto.PrivateKey.generate()
    recipients = organizer_recipients(organizer.public_key())
    started = time.perf_counter()
    cases = [make_case(rng, organizer=organizer, recipients=recipients) for _ in range(reports)]
    setup_s = time.perf_counter() - started
    check_no_plaintext(cases)

    with tempfile.TemporaryDirectory(prefix="bench-desk-cache-") as directory:
        # The desk's own cache (ciphertext only), filled as a sync fills it; deleted at the end.
        cache = DeskCache(Path(directory), key_id=organizer.key_id.hex())
        cache.replace_cases([json.loads(case.body) for case in cases])
        samples = measure(
            operations(cases, organizer, cache),
            {"cache_all": cache.cases},
            count=reports,
            block=block,
            repeat=repeat,
            check=checker(cases),
        )

    timings = {}
    for name, values in samples.items():
        median_s = statistics.median(values) / 1e9
        timings[name] = Timing(
            name=LABELS[name],
            median_s=median_s,
            min_s=min(values) / 1e9,
            max_s=max(values) / 1e9,
            reports_per_second=reports / median_s,
            us_per_report=median_s / reports * 1e6,
        )
    narrative_sizes = [len(case.values["narrative"].encode("utf-8")) for case in cases]
    return Outcome(
        date=datetime.now(UTC).date().isoformat(),
        reports=reports,
        repeat=repeat,
        block=block,
        cpus=os.cpu_count(),
        python=platform.python_version(),
        cryptography=importlib.metadata.version("cryptography"),
        narrative_bytes_min=min(narrative_sizes),
        narrative_bytes_max=max(narrative_sizes),
        bundle_json_bytes_mean=statistics.fmean(len(case.body) for case in cases),
        setup_s=setup_s,
        timings=timings,
        ratio_desk_to_floor=timings["desk"].median_s / timings["floor"].median_s,
        ratio_desk_to_floor_per_round=[
            desk / floor for desk, floor in zip(samples["desk"], samples["floor"], strict=True)
        ],
    )


def format_table(outcome: Outcome) -> str:
    """Render the outcome as a plain-text table with the desk/floor ratio underneath."""
    header = (
        f"Desk bulk decryption: {outcome.reports:,} case bundles, median of {outcome.repeat} "
        f"passes after 1 warm-up, interleaved in blocks of {outcome.block}, {outcome.cpus} CPUs, "
        f"{outcome.date}\n"
        f"Python {outcome.python}, cryptography {outcome.cryptography}; one X-Wing key\n"
        f"Bundles: 6 sealed fields, narrative {outcome.narrative_bytes_min:,}-"
        f"{outcome.narrative_bytes_max:,} bytes, {outcome.bundle_json_bytes_mean:,.0f} bytes of "
        f"API JSON on average; built in {outcome.setup_s:.1f} s (not measured)\n"
    )
    columns = f"{'operation':<36}{'reports/s':>11}{'µs/report':>11}{'median s':>10}"
    columns += f"{'min s':>9}{'max s':>9}"
    rows = [columns, "-" * len(columns)]
    for timing in outcome.timings.values():
        rows.append(
            f"{timing.name:<36}{timing.reports_per_second:>11,.0f}{timing.us_per_report:>11.1f}"
            f"{timing.median_s:>10.3f}{timing.min_s:>9.3f}{timing.max_s:>9.3f}"
        )
    per_round = ", ".join(f"{ratio:.2f}" for ratio in outcome.ratio_desk_to_floor_per_round)
    footer = (
        f"\nRatio desk / floor (time per report, by median): {outcome.ratio_desk_to_floor:.2f}x"
        f"\nPer pass: {per_round}"
    )
    return header + "\n" + "\n".join(rows) + "\n" + footer


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--reports",
        type=int,
        default=DEFAULT_REPORTS,
        help=f"synthetic case bundles decrypted per pass (default {DEFAULT_REPORTS})",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=DEFAULT_REPEAT,
        help=f"timed passes of every operation (default {DEFAULT_REPEAT})",
    )
    parser.add_argument(
        "--block",
        type=int,
        default=DEFAULT_BLOCK,
        help=f"reports per operation before moving to the next one (default {DEFAULT_BLOCK})",
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the figures here")
    arguments = parser.parse_args(argv)
    if arguments.reports < 1:
        parser.error("--reports must be at least 1")
    if arguments.repeat < 1:
        parser.error("--repeat must be at least 1")
    if arguments.block < 1:
        parser.error("--block must be at least 1")
    return arguments


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and optionally write the figures as JSON."""
    arguments = parse_arguments(argv)
    outcome = run_benchmark(
        reports=arguments.reports, repeat=arguments.repeat, block=arguments.block
    )
    print(format_table(outcome))
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(asdict(outcome), indent=2) + "\n", encoding="utf-8")
        print(f"\nFigures written to {arguments.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
