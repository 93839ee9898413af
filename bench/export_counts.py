"""Benchmark: generating a P1 export against the bare SQL aggregate over the same reports.

A throwaway register (SQLite file, organizer key and settings made in the run, in a temporary
directory) is seeded with ``--reports`` synthetic reports by ``services.demo.seed_reports``,
sealed exactly like real ones. Seeding runs in a child process and is timed separately: it is
not part of the comparison. Then, in the same process and interleaved round by round:

* ``baseline``: one ``SELECT occurred_period, category, country, count(*) FROM reports WHERE
  consent_statistics AND status IN (...) GROUP BY occurred_period, category, country`` through
  the app's SQLAlchemy engine: the bare aggregate over the same shell columns with the same
  filters as the export's own query, all rows fetched;
* ``export``: ``services.exports.export_counts`` for the 8 closed quarters before the current
  one (40 cells): ledger charge, reading the rows, mapping them to cells, OpenDP's search for
  the noise scale, counting and noise, writing the package, ledger completion;
* ``export by country``: the same with ``by_country=True`` (360 cells);
* parts of each export, to show where the time goes: ``consenting_records`` (reading the rows
  and mapping each to its cell), ``dp.noisy_counts`` (scale search, count, noise) and the
  scale search alone;
* two controls: the baseline's aggregate with every index ruled out (SQLite's unary ``+``), so
  that it is one table scan instead of the plan SQLite picks for the baseline (both plans are
  printed); and the export's ``SELECT`` of the three columns without ``GROUP BY``, all rows
  fetched, i.e. what reading the rows costs before any Python work on them.

One round of everything is run first and discarded. Each export writes into a fresh temporary
output directory. Untimed, the cell counts the export feeds to OpenDP are checked against the
baseline's groups, and the table-scan control's groups against the baseline's. Peak memory is
measured two ways, and they are different things: ``tracemalloc`` peak of Python allocations
during one extra untimed call of each operation (OpenDP's Rust side and SQLite's C side are
invisible to it), and the process's resident-set high-water mark from
``getrusage(RUSAGE_SELF).ru_maxrss`` before the first export and after the timed rounds (seeding
ran in another process, so it is not in this figure).

Run from the repository root::

    .venv/bin/python bench/export_counts.py [--reports N] [--repeat R] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import multiprocessing
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    # The benchmark runs from a checkout, where the package is not installed.
    sys.path.insert(0, str(REPO_ROOT))

from flask import Flask  # noqa: E402
from flask_migrate import upgrade  # noqa: E402

from incidents import create_app, crypto, vocabulary  # noqa: E402
from incidents.config import Settings  # noqa: E402
from incidents.db import db  # noqa: E402
from incidents.exports import dp  # noqa: E402
from incidents.exports.periods import Quarter, quarter_of_period  # noqa: E402
from incidents.keyring import KeyringCache  # noqa: E402
from incidents.services import demo, exports  # noqa: E402

DEFAULT_REPORTS = 100_000
DEFAULT_REPEAT = 3
QUARTERS = 8
SEED = 1
YEARLY_CAP = "1000000"
"""Large enough that no number of repeated exports is ever refused by the budget."""
ACTOR = "bench"

BASELINE_SQL = (
    "SELECT occurred_period, category, country, count(*) FROM reports "
    "WHERE consent_statistics AND status IN :statuses "
    "GROUP BY occurred_period, category, country"
)
SCAN_SQL = (
    "SELECT occurred_period, category, country, count(*) FROM reports "
    "WHERE consent_statistics AND +status IN :statuses "
    "GROUP BY +occurred_period, +category, +country"
)
"""The same aggregate with every index ruled out (SQLite's unary ``+``): one table scan."""
ROWS_SQL = (
    "SELECT occurred_period, category, country FROM reports "
    "WHERE consent_statistics AND status IN :statuses"
)
"""What ``consenting_records`` selects, as SQL."""
STATUSES = {"statuses": sorted(exports.COUNTED_STATUSES)}

ROW_LABELS = {
    "baseline": "SQL GROUP BY, rows fetched (baseline)",
    "export": "export_counts, 8 quarters",
    "export.records": "  of it: consenting_records",
    "export.noise": "  of it: dp.noisy_counts",
    "export.search": "    of that: scale search",
    "country": "export_counts by country",
    "country.records": "  of it: consenting_records",
    "country.noise": "  of it: dp.noisy_counts",
    "country.search": "    of that: scale search",
    "scan": "SQL GROUP BY, table scan (control)",
    "rows": "SELECT rows, no GROUP BY (control)",
}


@dataclass(frozen=True)
class Scope:
    """What the exports count: the quarter range, and the day they are made."""

    first: str
    last: str
    quarters: list[Quarter]
    today: date


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one operation over the timed rounds."""

    name: str
    median_s: float
    min_s: float
    max_s: float
    ratio_to_baseline: float


@dataclass(frozen=True)
class Outcome:
    """Everything the benchmark reports, as printed and as written with ``--json``."""

    date: str
    cpus: int | None
    python: str
    sqlite: str
    sqlalchemy: str
    opendp: str
    reports: int
    repeat: int
    seeding_s: float
    counted_reports: int
    records_in_range: int
    baseline_groups: int
    baseline_plan: str
    scan_plan: str
    cells: int
    cells_by_country: int
    first_quarter: str
    last_quarter: str
    timings: dict[str, Timing]
    ratio_export: float
    ratio_export_by_country: float
    ratio_export_to_scan: float
    ratio_export_by_country_to_scan: float
    tracemalloc_peak_mib: dict[str, float]
    maxrss_before_exports_mib: float
    maxrss_after_exports_mib: float


def closed_quarters(today: date, count: int) -> tuple[Quarter, ...]:
    """The ``count`` quarters before the one ``today`` is in, oldest first."""
    current = today.year * 4 + (today.month - 1) // 3
    return tuple(Quarter(index // 4, index % 4 + 1) for index in range(current - count, current))


def build_settings(directory: Path) -> Settings:
    """Test settings in ``directory`` for an organizer key generated now, with a huge ε cap."""
    organizer = crypto.PrivateKey.generate()  # the private half is never needed, nor stored
    public_path = directory / "organizer.pub"
    public_path.write_text(organizer.public_key().to_armor())
    settings = Settings.for_testing(
        directory,
        organizer_public_key_path=public_path,
        organizer_key_id=organizer.public_key().key_id_hex,
        database_url=f"sqlite:///{directory / 'register.sqlite3'}",
    )
    return dataclasses.replace(settings, export_yearly_cap=YEARLY_CAP)


def build_app(settings: Settings) -> Flask:
    """The application for ``settings`` with its schema migrated to the newest revision."""
    app = create_app(settings)
    with app.app_context():
        upgrade()
    return app


def seed_database(settings: Settings, count: int, today: date) -> float:
    """Store ``count`` synthetic reports (in a child process); return the seconds it took."""
    app = create_app(settings)
    step = max(1, count // 10)
    stored = 0

    def report(size: int) -> None:
        """Print a line every tenth of the way, so a long seeding shows it is alive."""
        nonlocal stored
        before, stored = stored, stored + size
        if stored // step > before // step:
            print(f"  seeded {stored:,} of {count:,}", file=sys.stderr, flush=True)

    with app.app_context():
        cache: KeyringCache = app.extensions["incidents.keyring"]
        started = time.perf_counter()
        demo.seed_reports(
            count,
            keyring=cache.get(),
            receipt_secret=settings.receipt_key,
            today=today,
            seed=SEED,
            progress=report,
        )
        elapsed = time.perf_counter() - started
        db.engine.dispose()
    return elapsed


def seed_in_child(settings: Settings, count: int, today: date) -> float:
    """Run ``seed_database`` in a fresh process so that its memory is not counted here."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(seed_database, settings, count, today).result()


def statement(sql: str) -> sa.TextClause:
    """``sql`` as a statement whose ``:statuses`` takes the list of counted statuses."""
    return sa.text(sql).bindparams(sa.bindparam("statuses", expanding=True))


def fetch_all(sql: str) -> list[sa.Row[Any]]:
    """Run ``sql`` on a connection from the app's engine and fetch every row."""
    with db.engine.connect() as connection:
        return list(connection.execute(statement(sql), STATUSES).all())


def aggregate_sql() -> list[sa.Row[Any]]:
    """The baseline: the bare GROUP BY over the export's shell columns and filters."""
    return fetch_all(BASELINE_SQL)


def query_plan(sql: str) -> str:
    """SQLite's EXPLAIN QUERY PLAN for ``sql``, one step after another."""
    with db.engine.connect() as connection:
        steps = connection.execute(statement("EXPLAIN QUERY PLAN " + sql), STATUSES).all()
    return "; ".join(str(step[-1]) for step in steps)


def run_export(
    settings: Settings, scope: Scope, *, by_country: bool, output: Path
) -> exports.ExportResult:
    """One P1 export of ``scope`` into a fresh directory under ``output``, as the CLI runs it."""
    destination = Path(tempfile.mkdtemp(prefix="export-", dir=output))
    return exports.export_counts(
        first=scope.first,
        last=scope.last,
        by_country=by_country,
        actor=ACTOR,
        destination=destination,
        epsilon=Decimal(settings.export_epsilon),
        yearly_cap=Decimal(settings.export_yearly_cap),
        contributions=settings.export_contributions,
        today=scope.today,
    )


def search_scale(grid: Sequence[dp.Cell], *, epsilon: float, contributions: int) -> float:
    """OpenDP's binary search for the noise scale, exactly as ``dp.noisy_counts`` runs it."""
    import opendp.prelude as opendp

    keys = [cell.key for cell in grid]
    # dp._measurement is private, but timing the search alone needs the very same measurement.
    return float(
        opendp.binary_search_param(
            lambda scale: dp._measurement(keys, scale), d_in=contributions, d_out=epsilon
        )
    )


def measure_interleaved(
    operations: dict[str, Callable[[], object]], *, repeat: int, after_each: Callable[[], None]
) -> dict[str, list[float]]:
    """Seconds per call: one discarded round, then ``repeat`` rounds of every operation in turn.

    ``after_each`` runs untimed after every call (it ends the call's database session, as the
    end of a request would).
    """
    samples: dict[str, list[float]] = {name: [] for name in operations}
    for round_number in range(repeat + 1):
        for name, operation in operations.items():
            started = time.perf_counter()
            operation()
            elapsed = time.perf_counter() - started
            after_each()
            if round_number:  # round 0 warms caches up; it is discarded
                samples[name].append(elapsed)
    return samples


def tracemalloc_peak(operation: Callable[[], object]) -> int:
    """Peak bytes of Python allocations made during one call of ``operation``."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        operation()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def max_rss_bytes() -> int:
    """The process's resident-set high-water mark so far (ru_maxrss: KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def expected_records(
    groups: Sequence[sa.Row[Any]], scope: Scope, *, by_country: bool
) -> Counter[str]:
    """Records per cell key as the baseline's groups imply, for checking the export's input."""
    wanted = {str(quarter) for quarter in scope.quarters}
    expected: Counter[str] = Counter()
    for period, category, country, count in groups:
        quarter = quarter_of_period(period)
        kind = vocabulary.CATEGORY_BY_CODE.get(category)
        if quarter is None or kind is None or str(quarter) not in wanted:
            continue
        cell = dp.Cell(str(quarter), kind.group, dp.country_bucket(country) if by_country else None)
        expected[cell.key] += count
    return expected


def check_records(
    groups: Sequence[sa.Row[Any]],
    records: dict[bool, list[str]],
    scope: Scope,
) -> None:
    """Fail loudly unless the export counts exactly what the baseline's groups say."""
    for by_country, found in records.items():
        if Counter(found) != expected_records(groups, scope, by_country=by_country):
            raise RuntimeError(f"consenting_records(by_country={by_country}) disagrees with SQL")


def check_export(result: exports.ExportResult, grid: Sequence[dp.Cell]) -> None:
    """Fail loudly unless an export wrote its package and released one count per cell."""
    if not result.archive.is_file() or len(result.counts.counts) != len(grid):
        raise RuntimeError("export_counts did not produce a complete package")


def run_benchmark(*, reports: int, repeat: int) -> Outcome:
    """Seed a throwaway register, then time the exports against the SQL aggregate."""
    today = datetime.now(UTC).date()
    quarters = closed_quarters(today, QUARTERS)
    scope = Scope(str(quarters[0]), str(quarters[-1]), list(quarters), today)
    grids = {flag: dp.build_grid(scope.quarters, by_country=flag) for flag in (False, True)}
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        directory = Path(tmp)
        settings = build_settings(directory)
        output = directory / "out"
        output.mkdir()
        app = build_app(settings)
        print(f"Seeding {reports:,} synthetic reports ...", file=sys.stderr, flush=True)
        seeding_s = seed_in_child(settings, reports, today)
        epsilon = float(settings.export_epsilon)
        contributions = settings.export_contributions
        with app.app_context():
            import opendp.prelude  # noqa: F401 - loading the library is set-up, not export work

            groups = aggregate_sql()
            records = {
                flag: exports.consenting_records(scope.quarters, by_country=flag)
                for flag in (False, True)
            }
            db.session.remove()
            check_records(groups, records, scope)
            if sorted(fetch_all(SCAN_SQL)) != sorted(groups):
                raise RuntimeError("the table-scan aggregate disagrees with the baseline")
            plans = {"baseline": query_plan(BASELINE_SQL), "scan": query_plan(SCAN_SQL)}
            # Before the first export: what the exports add shows as the rise after the rounds.
            rss_before = max_rss_bytes()
            check_export(run_export(settings, scope, by_country=False, output=output), grids[0])
            check_export(run_export(settings, scope, by_country=True, output=output), grids[1])
            db.session.remove()

            def noise(flag: bool) -> Callable[[], object]:
                """dp.noisy_counts on the records prepared above, for one grid."""
                return lambda: dp.noisy_counts(
                    records[flag], grid=grids[flag], epsilon=epsilon, contributions=contributions
                )

            def search(flag: bool) -> Callable[[], object]:
                """The scale search alone, for one grid."""
                return lambda: search_scale(
                    grids[flag], epsilon=epsilon, contributions=contributions
                )

            def export(flag: bool) -> Callable[[], object]:
                """One whole export, for one grid."""
                return lambda: run_export(settings, scope, by_country=flag, output=output)

            def records_of(flag: bool) -> Callable[[], object]:
                """consenting_records alone, for one grid."""
                return lambda: exports.consenting_records(scope.quarters, by_country=flag)

            operations: dict[str, Callable[[], object]] = {
                "baseline": aggregate_sql,
                "export": export(False),
                "export.records": records_of(False),
                "export.noise": noise(False),
                "export.search": search(False),
                "country": export(True),
                "country.records": records_of(True),
                "country.noise": noise(True),
                "country.search": search(True),
                "scan": lambda: fetch_all(SCAN_SQL),
                "rows": lambda: fetch_all(ROWS_SQL),
            }

            def end_call() -> None:
                """End the session and drop the packages written (untimed)."""
                db.session.remove()
                for written in output.iterdir():
                    shutil.rmtree(written)

            samples = measure_interleaved(operations, repeat=repeat, after_each=end_call)
            rss_after = max_rss_bytes()
            peaks = {}
            for name, operation in operations.items():
                peaks[name] = tracemalloc_peak(operation) / 2**20
                end_call()
            db.engine.dispose()  # closes the SQLite file (and its WAL) before the directory goes

    medians = {name: statistics.median(values) for name, values in samples.items()}
    timings = {
        name: Timing(
            name=ROW_LABELS[name],
            median_s=medians[name],
            min_s=min(values),
            max_s=max(values),
            ratio_to_baseline=medians[name] / medians["baseline"],
        )
        for name, values in samples.items()
    }
    return Outcome(
        date=today.isoformat(),
        cpus=os.cpu_count(),
        python=platform.python_version(),
        sqlite=sqlite3.sqlite_version,
        sqlalchemy=sa.__version__,
        opendp=importlib.metadata.version("opendp"),
        reports=reports,
        repeat=repeat,
        seeding_s=seeding_s,
        counted_reports=sum(row[3] for row in groups),
        records_in_range=len(records[False]),
        baseline_groups=len(groups),
        baseline_plan=plans["baseline"],
        scan_plan=plans["scan"],
        cells=len(grids[False]),
        cells_by_country=len(grids[True]),
        first_quarter=scope.first,
        last_quarter=scope.last,
        timings=timings,
        ratio_export=timings["export"].ratio_to_baseline,
        ratio_export_by_country=timings["country"].ratio_to_baseline,
        ratio_export_to_scan=medians["export"] / medians["scan"],
        ratio_export_by_country_to_scan=medians["country"] / medians["scan"],
        tracemalloc_peak_mib=peaks,
        maxrss_before_exports_mib=rss_before / 2**20,
        maxrss_after_exports_mib=rss_after / 2**20,
    )


def format_table(outcome: Outcome) -> str:
    """Render the outcome as a plain-text table with ratios and memory underneath."""
    header = (
        f"Generating a P1 export: {outcome.reports:,} seeded reports, median of "
        f"{outcome.repeat} interleaved rounds after 1 warm-up, {outcome.cpus} CPUs, "
        f"{outcome.date}\n"
        f"Python {outcome.python}, SQLite {outcome.sqlite}, SQLAlchemy {outcome.sqlalchemy}, "
        f"OpenDP {outcome.opendp}\n"
        f"Seeding (not compared): {outcome.seeding_s:.1f} s. Counted reports (consent, counted "
        f"status): {outcome.counted_reports:,} in {outcome.baseline_groups:,} SQL groups; "
        f"{outcome.records_in_range:,} of them in {outcome.first_quarter}-"
        f"{outcome.last_quarter} ({outcome.cells} cells, {outcome.cells_by_country} by country)\n"
        f"SQLite plan of the baseline: {outcome.baseline_plan}\n"
        f"SQLite plan of the table-scan control: {outcome.scan_plan}\n"
    )
    columns = f"{'operation':<40}{'median s':>10}{'min s':>10}{'max s':>10}{'× baseline':>12}"
    columns += f"{'py peak MiB':>13}"
    rows = [columns, "-" * len(columns)]
    for name, timing in outcome.timings.items():
        rows.append(
            f"{timing.name:<40}{timing.median_s:>10.3f}{timing.min_s:>10.3f}"
            f"{timing.max_s:>10.3f}{timing.ratio_to_baseline:>12.1f}"
            f"{outcome.tracemalloc_peak_mib[name]:>13.1f}"
        )
    footer = (
        f"\nRatio export / SQL aggregate: {outcome.ratio_export:.1f}x, by country "
        f"{outcome.ratio_export_by_country:.1f}x (by median); against the table-scan control "
        f"{outcome.ratio_export_to_scan:.1f}x and {outcome.ratio_export_by_country_to_scan:.1f}x\n"
        "py peak: tracemalloc peak of Python allocations in one more, untimed call (inputs made\n"
        "before it, OpenDP's Rust and SQLite's C allocations are not counted)\n"
        f"Process resident set, ru_maxrss high-water mark: {outcome.maxrss_before_exports_mib:.1f}"
        f" MiB before the timed rounds, {outcome.maxrss_after_exports_mib:.1f} MiB after them"
    )
    return header + "\n" + "\n".join(rows) + "\n" + footer


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--reports",
        type=int,
        default=DEFAULT_REPORTS,
        help=f"synthetic reports to seed (default {DEFAULT_REPORTS:,})",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=DEFAULT_REPEAT,
        help=f"timed rounds of every operation (default {DEFAULT_REPEAT})",
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the figures here")
    arguments = parser.parse_args(argv)
    if arguments.reports < 1:
        parser.error("--reports must be at least 1")
    if arguments.repeat < 1:
        parser.error("--repeat must be at least 1")
    return arguments


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and optionally write the figures as JSON."""
    arguments = parse_arguments(argv)
    outcome = run_benchmark(reports=arguments.reports, repeat=arguments.repeat)
    print(format_table(outcome))
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(asdict(outcome), indent=2) + "\n", encoding="utf-8")
        print(f"\nFigures written to {arguments.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
