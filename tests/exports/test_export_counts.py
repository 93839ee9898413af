"""P1 exports end to end: ``flask export counts`` and ``flask export ledger`` (DESIGN §7, S9).

What is checked is what an NGO receiving the package, or an auditor holding the ledger, could
check: the files and their declared hashes, the complete grid in its fixed order, the
controlled vocabulary, the absence of anything taken from a report (ids, receipts, exact dates,
shell weeks and months, timestamps, free text), fresh noise and a fresh charge for every
request, the yearly cap, and what a crash leaves behind. Which reports count is checked on the
records fed to the noise (``consenting_records``), since the noisy output cannot show it.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import json
import os
import re
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import Result
from flask import Flask
from flask.testing import FlaskCliRunner

from incidents import vocabulary
from incidents.config import Settings
from incidents.db import db
from incidents.exports import dp, ledger
from incidents.exports.periods import Quarter
from incidents.models import LedgerEntry
from incidents.services import exports, followup
from incidents.services.reports import occurred_period
from tests.factories import make_filed_report

YEAR_2025 = ["2025Q1", "2025Q2", "2025Q3", "2025Q4"]
GROUPS = ["mobility", "liberty", "privacy", "intimidation", "physical"]
COUNTRIES = [*vocabulary.EXPORT_COUNTRIES, "other"]
FILES = ["data.csv", "data.json", "data.csv-metadata.json", "meta.json"]
PACKAGE_NAME = re.compile(r"^incidents-p1-2025Q1-2025Q4-[0-9a-f]{8}$")
TIME_OF_DAY = re.compile(r"\d{1,2}:\d{2}")
ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


# --------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class Filed:
    """A report filed for a test, with everything of it that must never reach an export."""

    id: uuid.UUID
    receipt: str
    received_on: date
    occurred_on: date
    period: str
    secrets: tuple[str, ...]

    def forbidden(self) -> list[str]:
        """Strings of this report that no exported file may contain."""
        return [
            str(self.id),
            self.id.hex,
            self.receipt,
            self.receipt.replace("-", ""),
            self.received_on.isoformat(),
            self.occurred_on.isoformat(),
            self.occurred_on.strftime("%d.%m.%Y"),
            self.period,
            *self.secrets,
        ]


def file_marked(
    app: Flask,
    tag: str,
    *,
    category: str,
    occurred_on: date,
    country: str,
    city: str,
    precision: str = "day",
    received_on: date | None = None,
    status: str = "new",
    consent: bool = True,
) -> Filed:
    """File one report whose free texts are distinctive phrases made from ``tag``."""
    texts = {
        "narrative": f"Narrative {tag}: a man in a crimson raincoat photographed us",
        "place_detail": f"Place {tag} behind the old tram depot",
        "perpetrator_description": f"Perpetrator {tag} with a scar over the left eyebrow",
        "contact": f"signal: witness.{tag}.77",
        "targeted_person": f"my cousin {tag}",
    }
    received = received_on or occurred_on.replace(day=min(occurred_on.day + 2, 28))
    filed = make_filed_report(
        app,
        received_on=received,
        status=status,
        category=category,
        occurred_on=occurred_on,
        date_precision=precision,
        country=country,
        city=city,
        consent_statistics=consent,
        **texts,
    )
    return Filed(
        filed.report_id,
        filed.receipt,
        received,
        occurred_on,
        occurred_period(occurred_on, precision),
        (tag, *texts.values(), *([city] if city != "other" else [])),
    )


@dataclass(frozen=True)
class Population:
    """The reports of ``population`` and the records 2025 exports must count."""

    reports: dict[str, Filed]
    records_by_country: list[str]
    records: list[str]


@pytest.fixture
def population(app: Flask) -> Population:
    """Reports inside and outside 2025, consenting or not, counted or not (by status)."""
    add = functools.partial(file_marked, app)
    # fmt: off
    reports = {
        "A": add("alpaca", category="threat", occurred_on=date(2025, 2, 10),
                 country="RS", city="novi_sad"),
        "B": add("bison", category="surveillance", occurred_on=date(2025, 5, 20),
                 country="GE", city="tbilisi", precision="week"),
        "C": add("caracal", category="deportation", occurred_on=date(2025, 8, 3),
                 country="FI", city="helsinki", precision="month"),
        "D": add("dugong", category="assault", occurred_on=date(2025, 11, 11),
                 country="other", city="other", precision="estimate"),
        # No consent to statistics: never counted.
        "E": add("echidna", category="detention", occurred_on=date(2025, 3, 3),
                 country="RS", city="belgrade", consent=False),
        # Duplicates and rejected reports: never counted.
        "F": add("fossa", category="doxxing", occurred_on=date(2025, 4, 4),
                 country="DE", city="berlin", status="duplicate"),
        "G": add("gharial", category="recruitment", occurred_on=date(2025, 6, 6),
                 country="RU", city="moscow", status="rejected"),
        # Monday 30 December 2024 is in 2025-W01, whose Thursday is in 2025Q1.
        "H": add("hoatzin", category="rally_disruption", occurred_on=date(2024, 12, 30),
                 country="TR", city="istanbul", received_on=date(2025, 1, 2)),
        # Monday 29 December 2025 is in 2026-W01: outside a 2025 export.
        "I": add("ibex", category="abduction", occurred_on=date(2025, 12, 29),
                 country="KZ", city="almaty", received_on=date(2026, 1, 2)),
        # October 2024: outside.
        "J": add("jerboa", category="legal_harassment", occurred_on=date(2024, 10, 10),
                 country="AM", city="yerevan", precision="month"),
        "K": add("kinkajou", category="entry_denial", occurred_on=date(2025, 7, 15),
                 country="ME", city="budva", status="closed"),
        # Tuesday 30 September 2025 is in 2025-W40, whose Thursday is 2 October: 2025Q4.
        "L": add("lemur", category="pressure_relatives", occurred_on=date(2025, 9, 30),
                 country="KG", city="bishkek", status="triaged", received_on=date(2025, 10, 1)),
    }
    # fmt: on
    records_by_country = [
        "2025Q1|intimidation|RS",
        "2025Q2|privacy|GE",
        "2025Q3|mobility|other",
        "2025Q4|physical|other",
        "2025Q1|physical|TR",
        "2025Q3|mobility|ME",
        "2025Q4|intimidation|other",
    ]
    records = [record.rsplit("|", 1)[0] for record in records_by_country]
    return Population(reports, sorted(records_by_country), sorted(records))


def quarters_of_2025() -> list[Quarter]:
    """The four quarters of 2025."""
    return [Quarter(2025, number) for number in (1, 2, 3, 4)]


# --------------------------------------------------------------------------- running exports


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """Where exports go: a folder of its own (the test's SQLite file is in ``tmp_path``)."""
    return tmp_path / "exports"


def export(
    runner: FlaskCliRunner, out: Path, *extra: str, first: str = "2025Q1", last: str = "2025Q4"
) -> Result:
    """Run ``flask export counts`` for a range into ``out``."""
    return runner.invoke(
        args=["export", "counts", "--from", first, "--to", last, "--out", str(out), *extra]
    )


@dataclass(frozen=True)
class Package:
    """An export package as found on disk: the zip, the folder beside it, and their files."""

    archive: Path
    folder: Path
    entries: dict[str, bytes]
    """The zip's members by file name (without the folder prefix)."""
    infos: list[zipfile.ZipInfo]
    comment: bytes

    @property
    def meta(self) -> dict[str, Any]:
        """meta.json, parsed."""
        value: dict[str, Any] = json.loads(self.entries["meta.json"])
        return value

    def rows(self) -> list[dict[str, str]]:
        """data.csv as dictionaries (values as text)."""
        return list(csv.DictReader(io.StringIO(self.entries["data.csv"].decode("utf-8"))))

    def header(self) -> list[str]:
        """data.csv's header row."""
        return next(csv.reader(io.StringIO(self.entries["data.csv"].decode("utf-8"))))


def packages(out: Path) -> list[Package]:
    """Every package in ``out`` (sorted by name)."""
    found = []
    for archive in sorted(out.glob("*.zip")):
        with zipfile.ZipFile(archive) as bundle:
            infos = bundle.infolist()
            entries = {info.filename.split("/", 1)[1]: bundle.read(info) for info in infos}
            comment = bundle.comment
        found.append(Package(archive, out / archive.stem, entries, infos, comment))
    return found


def only_package(out: Path) -> Package:
    """The single package in ``out``."""
    found = packages(out)
    assert len(found) == 1, found
    return found[0]


def tree(directory: Path) -> list[str]:
    """Every file and folder under ``directory``, hidden ones included (empty if missing)."""
    found = []
    for root, folders, files in os.walk(directory):
        for name in [*folders, *files]:
            found.append(str(Path(root, name).relative_to(directory)))
    return sorted(found)


def ledger_rows(app: Flask) -> list[tuple[str, str, str, str]]:
    """(kind, export id, ε, package SHA-256) of every ledger entry, in chain order."""
    with app.app_context():
        rows = db.session.scalars(sa.select(LedgerEntry).order_by(LedgerEntry.seq)).all()
        result = [(row.kind, row.export_id, row.epsilon, row.output_sha256) for row in rows]
        db.session.remove()
    return result


def ledger_is_intact(app: Flask) -> bool:
    """Whether the ledger's chain verifies."""
    with app.app_context():
        intact = ledger.verify().is_intact
        db.session.remove()
    return intact


def current_quarter() -> str:
    """The quarter that contains today (UTC), which cannot be exported yet."""
    today = datetime.now(UTC).date()
    return f"{today.year}Q{(today.month - 1) // 3 + 1}"


def sha256(data: bytes) -> str:
    """Hex SHA-256."""
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- the package


def test_export_writes_a_zip_and_a_folder_with_the_same_files(
    runner: FlaskCliRunner, out: Path
) -> None:
    result = export(runner, out)
    assert result.exit_code == 0, result.output
    package = only_package(out)
    assert PACKAGE_NAME.match(package.folder.name)
    assert tree(out) == sorted(
        [package.archive.name, package.folder.name]
        + [f"{package.folder.name}/{name}" for name in FILES]
    )
    assert [info.filename for info in package.infos] == [
        f"{package.folder.name}/{name}" for name in FILES
    ]
    for name in FILES:
        assert (package.folder / name).read_bytes() == package.entries[name]


def test_meta_json_declares_the_sha256_of_every_data_file(
    runner: FlaskCliRunner, out: Path
) -> None:
    assert export(runner, out, "--by", "country").exit_code == 0
    package = only_package(out)
    declared = package.meta["files"]
    assert sorted(declared) == sorted(["data.csv", "data.json", "data.csv-metadata.json"])
    for name, digest in declared.items():
        assert digest == sha256(package.entries[name])
        assert digest == sha256((package.folder / name).read_bytes())


def test_the_zip_sha256_is_printed_and_recorded_in_the_ledger(
    app: Flask, runner: FlaskCliRunner, out: Path
) -> None:
    result = export(runner, out)
    assert result.exit_code == 0, result.output
    package = only_package(out)
    digest = sha256(package.archive.read_bytes())
    assert f"SHA-256 of the package: {digest}" in result.output
    (charge_kind, export_id, epsilon, _), completion = ledger_rows(app)
    assert (charge_kind, epsilon) == ("charge", "1")
    assert completion == ("complete", export_id, "0", digest)
    assert f"Export {export_id}: {package.archive}" in result.output
    assert package.folder.name.endswith(export_id[:8])


@pytest.mark.parametrize(
    ("by", "header", "cells"),
    [
        ((), ["period", "category_group", "count"], [(q, g) for q in YEAR_2025 for g in GROUPS]),
        (
            ("--by", "country"),
            ["period", "category_group", "country", "count"],
            [(q, g, c) for q in YEAR_2025 for g in GROUPS for c in COUNTRIES],
        ),
    ],
)
@pytest.mark.usefixtures("population")
def test_data_csv_is_exactly_the_declared_grid_in_grid_order(
    runner: FlaskCliRunner,
    out: Path,
    by: tuple[str, ...],
    header: list[str],
    cells: list[tuple[str, ...]],
) -> None:
    assert export(runner, out, *by).exit_code == 0
    package = only_package(out)
    assert package.header() == header
    rows = package.rows()
    assert [tuple(row[column] for column in header[:-1]) for row in rows] == cells
    assert all(re.fullmatch(r"0|[1-9]\d*", row["count"]) for row in rows)


def test_grid_and_order_do_not_depend_on_the_data(
    app: Flask, runner: FlaskCliRunner, out: Path
) -> None:
    # Given an export of an empty register
    assert export(runner, out / "empty", "--by", "country").exit_code == 0
    # When reports are filed and the same export is run again
    file_marked(
        app, "quetzal", category="doxxing", occurred_on=date(2025, 6, 2), country="RS", city="nis"
    )
    assert export(runner, out / "filed", "--by", "country").exit_code == 0

    # Then both tables have the same cells in the same order: only the counts differ
    def cells(out: Path) -> list[tuple[str, str, str]]:
        rows = only_package(out).rows()
        return [(row["period"], row["category_group"], row["country"]) for row in rows]

    assert cells(out / "empty") == cells(out / "filed")
    assert len(cells(out / "empty")) == 4 * 5 * 9


def test_data_json_and_the_csvw_description_match_data_csv(
    runner: FlaskCliRunner, out: Path
) -> None:
    assert export(runner, out, "--by", "country").exit_code == 0
    package = only_package(out)
    as_json = json.loads(package.entries["data.json"])
    assert as_json == [{**row, "count": int(row["count"])} for row in package.rows()]
    described = json.loads(package.entries["data.csv-metadata.json"])
    assert described["url"] == "data.csv"
    columns = described["tableSchema"]["columns"]
    assert [column["name"] for column in columns] == package.header()
    assert columns[-1]["datatype"] == "nonNegativeInteger"


@pytest.mark.usefixtures("population")
def test_every_value_is_in_the_controlled_vocabulary(runner: FlaskCliRunner, out: Path) -> None:
    assert export(runner, out, "--by", "country").exit_code == 0
    package = only_package(out)
    for row in package.rows():
        assert set(row) == {"period", "category_group", "country", "count"}
        assert re.fullmatch(r"\d{4}Q[1-4]", row["period"])
        assert row["period"] in YEAR_2025
        assert row["category_group"] in GROUPS
        assert row["country"] in COUNTRIES
        assert int(row["count"]) >= 0
    assert package.meta["periods"] == YEAR_2025
    assert package.meta["breakdown"] == ["period", "category_group", "country"]


def test_meta_json_states_the_method_parameters_and_error(
    runner: FlaskCliRunner, out: Path
) -> None:
    assert export(runner, out).exit_code == 0
    meta = only_package(out).meta
    assert meta["product"] == "P1"
    assert "OpenDP" in meta["method"]
    assert meta["epsilon"] == pytest.approx(1.0)
    assert meta["noise_scale"] == pytest.approx(3.0)  # up to 3 reports per person (settings)
    assert meta["error_95"] == pytest.approx(9.4, abs=0.05)
    assert "3 reports" in meta["privacy_unit"]
    assert "±9.4" in meta["explanation"]
    assert meta["generated_on"] == datetime.now(UTC).date().isoformat()


# --------------------------------------------------------------------------- nothing identifying


def package_texts(out: Path) -> dict[str, str]:
    """Every name and every file's text in ``out``, zip members included, by where it is."""
    texts: dict[str, str] = {"names": "\n".join(tree(out))}
    for path in out.rglob("*"):
        if path.is_file() and path.suffix != ".zip":
            texts[str(path.relative_to(out))] = path.read_text("utf-8")
    for package in packages(out):
        texts[f"{package.archive.name}:names"] = "\n".join(i.filename for i in package.infos)
        texts[f"{package.archive.name}:comment"] = package.comment.decode("utf-8")
        for name, data in package.entries.items():
            texts[f"{package.archive.name}:{name}"] = data.decode("utf-8")
    return texts


def test_no_file_holds_an_id_a_date_a_period_or_free_text_of_a_report(
    runner: FlaskCliRunner, out: Path, population: Population
) -> None:
    result = export(runner, out, "--by", "country")
    assert result.exit_code == 0, result.output
    texts = package_texts(out)
    texts["command output"] = result.output
    assert len(texts) > 8
    for tag, filed in population.reports.items():
        for secret in filed.forbidden():
            for where, text in texts.items():
                assert secret.lower() not in text.lower(), f"report {tag}: {secret!r} in {where}"


def test_no_timestamps_and_no_dates_but_the_day_of_the_export(
    runner: FlaskCliRunner, out: Path
) -> None:
    assert export(runner, out, "--by", "country").exit_code == 0
    today = datetime.now(UTC).date().isoformat()
    for where, text in package_texts(out).items():
        assert not TIME_OF_DAY.search(text), where
        days = set(ISO_DAY.findall(text))
        if where.endswith("meta.json"):
            assert days == {today}  # "generated_on", the day the export was made
        else:
            assert days == set(), where


def test_zip_members_carry_no_real_timestamps(runner: FlaskCliRunner, out: Path) -> None:
    assert export(runner, out).exit_code == 0
    for info in only_package(out).infos:
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert info.extra == b""  # no extended-timestamp (UT) or NTFS time fields
        assert info.comment == b""


# --------------------------------------------------------------------------- which reports count


def test_only_consenting_counted_reports_in_range_are_records(
    app: Flask, population: Population
) -> None:
    with app.app_context():
        by_country = exports.consenting_records(quarters_of_2025(), by_country=True)
        plain = exports.consenting_records(quarters_of_2025(), by_country=False)
    assert sorted(by_country) == population.records_by_country
    assert sorted(plain) == population.records


def test_records_are_limited_to_the_quarters_asked_for(app: Flask, population: Population) -> None:
    with app.app_context():
        second_half = exports.consenting_records(
            [Quarter(2025, 3), Quarter(2025, 4)], by_country=True
        )
        boundary = exports.consenting_records([Quarter(2026, 1)], by_country=True)
        before = exports.consenting_records([Quarter(2024, 4)], by_country=True)
    assert sorted(second_half) == [
        record
        for record in population.records_by_country
        if record.startswith(("2025Q3", "2025Q4"))
    ]
    assert boundary == ["2026Q1|liberty|KZ"]  # report I, from the last days of 2025
    assert before == ["2024Q4|liberty|AM"]  # report J


def test_withdrawn_consent_removes_the_report_from_later_exports(
    app: Flask, settings: Settings, population: Population
) -> None:
    with app.app_context():
        case = followup.find_case(
            population.reports["B"].receipt, receipt_secret=settings.receipt_key
        )
        followup.withdraw_consent(case, statistics=True, contact=False)
        records = exports.consenting_records(quarters_of_2025(), by_country=True)
    expected = list(population.records_by_country)
    expected.remove("2025Q2|privacy|GE")
    assert sorted(records) == expected


def test_withdrawing_only_contact_consent_keeps_the_report_counted(
    app: Flask, settings: Settings, population: Population
) -> None:
    with app.app_context():
        case = followup.find_case(
            population.reports["B"].receipt, receipt_secret=settings.receipt_key
        )
        followup.withdraw_consent(case, statistics=False, contact=True)
        records = exports.consenting_records(quarters_of_2025(), by_country=True)
    assert sorted(records) == population.records_by_country


@pytest.mark.parametrize("status", ["new", "triaged", "assigned", "in_progress", "closed"])
def test_every_working_status_counts(app: Flask, status: str) -> None:
    file_marked(
        app,
        "okapi",
        category="smear",
        occurred_on=date(2025, 1, 15),
        country="DE",
        city="berlin",
        status=status,
    )
    with app.app_context():
        assert exports.consenting_records(quarters_of_2025(), by_country=True) == [
            "2025Q1|intimidation|DE"
        ]


# --------------------------------------------------------------------------- noise and charges


@pytest.mark.usefixtures("population")
def test_the_same_request_twice_draws_fresh_noise_and_is_charged_twice(
    app: Flask, runner: FlaskCliRunner, out: Path
) -> None:
    first = export(runner, out, "--by", "country")
    second = export(runner, out, "--by", "country")
    assert (first.exit_code, second.exit_code) == (0, 0), second.output
    one, two = packages(out)
    assert [row["count"] for row in one.rows()] != [row["count"] for row in two.rows()]
    entries = ledger_rows(app)
    assert [(kind, epsilon) for kind, _, epsilon, _ in entries] == [
        ("charge", "1"),
        ("complete", "0"),
        ("charge", "1"),
        ("complete", "0"),
    ]
    assert entries[0][1] != entries[2][1]
    archives = {sha256(one.archive.read_bytes()), sha256(two.archive.read_bytes())}
    assert {entries[1][3], entries[3][3]} == archives
    with app.app_context():
        assert ledger.spent_in(datetime.now(UTC).year) == Decimal(2)


def test_export_past_the_yearly_cap_is_refused_with_nothing_charged_or_written(
    settings: Settings, make_app: Callable[[Settings], Flask], out: Path
) -> None:
    # Given a cap of 1.5 and one export of ε = 1 already made
    app = make_app(dataclasses.replace(settings, export_yearly_cap="1.5"))
    runner = app.test_cli_runner()
    assert export(runner, out).exit_code == 0
    files_before, ledger_before = tree(out), ledger_rows(app)
    # When the same export is asked for again
    result = export(runner, out)
    # Then it is refused with a clear message, and nothing is charged or written
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit)
    assert "only 0.5 of this year's 1.5 is left" in result.output
    assert "Nothing was computed or charged" in result.output
    assert "Traceback" not in result.output
    assert ledger_rows(app) == ledger_before
    assert tree(out) == files_before


def test_epsilon_option_sets_the_charge_and_the_noise(
    app: Flask, runner: FlaskCliRunner, out: Path
) -> None:
    result = export(runner, out / "a", "--epsilon", "3")
    assert result.exit_code == 0, result.output
    assert ledger_rows(app)[0][2] == "3"
    meta = only_package(out / "a").meta
    assert meta["epsilon"] == pytest.approx(3.0)
    assert meta["noise_scale"] == pytest.approx(1.0)  # 3 contributions / ε 3
    refused = export(runner, out / "b", "--epsilon", "1.5")  # 3 + 1.5 > 4
    assert refused.exit_code != 0
    assert "only 1 of this year's 4 is left" in refused.output
    assert len(ledger_rows(app)) == 2
    assert tree(out / "b") == []


@pytest.mark.parametrize(
    ("epsilon", "message"),
    [
        ("0", "between 0.01 and 10"),
        ("-1", "between 0.01 and 10"),
        ("NaN", "between 0.01 and 10"),
        ("abc", "decimal numbers"),
        ("Infinity", "between 0.01 and 10"),
        ("1e-30", "between 0.01 and 10"),
        ("11", "between 0.01 and 10"),
    ],
)
def test_unusable_epsilon_is_refused_with_nothing_charged(
    app: Flask, runner: FlaskCliRunner, out: Path, epsilon: str, message: str
) -> None:
    result = export(runner, out, "--epsilon", epsilon)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    assert ledger_rows(app) == []
    assert tree(out) == []


# --------------------------------------------------------------------------- bad periods


@pytest.mark.parametrize(
    ("first", "last", "message"),
    [
        ("2025Q1", "current", "not closed"),
        ("current", "current", "not closed"),
        ("2025Q1", "2099Q4", "not closed"),
        ("2025Q1", "9999Q4", "not closed"),
        ("2025Q3", "2025Q1", "ends before it starts"),
        ("2000Q1", "2025Q4", "at most 40"),
        ("2025Q5", "2025Q4", "is not a quarter"),
        ("2025-Q1", "2025Q4", "is not a quarter"),
        ("2025Q1", "2025", "is not a quarter"),
        ("0000Q1", "0000Q2", "is not a quarter"),
        ("2025-03", "2025Q4", "is not a quarter"),
    ],
)
def test_unexportable_range_is_refused_with_nothing_charged_or_written(
    app: Flask, runner: FlaskCliRunner, out: Path, first: str, last: str, message: str
) -> None:
    first, last = (current_quarter() if q == "current" else q for q in (first, last))
    result = export(runner, out, first=first, last=last)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    assert ledger_rows(app) == []
    assert tree(out) == []


# --------------------------------------------------------------------------- export ledger


def test_export_ledger_reports_spending_and_an_intact_chain(
    runner: FlaskCliRunner, out: Path
) -> None:
    assert export(runner, out).exit_code == 0
    assert export(runner, out, "--epsilon", "0.5").exit_code == 0
    result = runner.invoke(args=["export", "ledger"])
    assert result.exit_code == 0, result.output
    year = datetime.now(UTC).year
    assert f"{year}: ε spent 1.5 of 4 (left 2.5)" in result.output
    assert "Ledger chain intact: 4 entries" in result.output


def test_export_ledger_on_an_empty_ledger_shows_the_whole_cap(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["export", "ledger"])
    assert result.exit_code == 0, result.output
    assert "ε spent 0 of 4 (left 4)" in result.output
    assert "Ledger chain intact: 0 entries" in result.output


def test_export_ledger_exits_1_after_an_entry_is_edited(
    app: Flask, runner: FlaskCliRunner, out: Path
) -> None:
    assert export(runner, out).exit_code == 0
    with app.app_context():
        table = LedgerEntry.__table__
        db.session.execute(sa.update(table).where(table.c.seq == 1).values(epsilon="0.1"))
        db.session.commit()
        db.session.remove()
    result = runner.invoke(args=["export", "ledger"])
    assert result.exit_code == 1
    assert "Ledger chain BROKEN at entry 1" in result.output
    assert "intact" not in result.output


# --------------------------------------------------------------------------- crashes


def test_crash_while_counting_keeps_the_charge_and_leaves_no_files(
    app: Flask, runner: FlaskCliRunner, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: object, **kwargs: object) -> dp.NoisyCounts:
        raise RuntimeError("simulated crash while counting")

    monkeypatch.setattr(dp, "noisy_counts", crash)
    result = export(runner, out)
    assert result.exit_code != 0
    assert isinstance(result.exception, RuntimeError)
    # The charge was committed before counting and stays: the budget errs on the safe side.
    assert [(kind, epsilon) for kind, _, epsilon, _ in ledger_rows(app)] == [("charge", "1")]
    assert ledger_is_intact(app)
    with app.app_context():
        assert ledger.spent_in(datetime.now(UTC).year) == Decimal(1)
    assert tree(out) == []


@pytest.fixture
def failing_write(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Make one step of writing the package fail with an OSError (disk full, say)."""

    def arm(step: str) -> None:
        calls = {"count": 0}
        if step == "zip":  # while writing the second member of the zip
            original_writestr = zipfile.ZipFile.writestr

            def writestr(self: zipfile.ZipFile, *args: Any, **kwargs: Any) -> None:
                calls["count"] += 1
                if calls["count"] == 2:
                    raise OSError(28, "No space left on device")
                original_writestr(self, *args, **kwargs)

            monkeypatch.setattr(zipfile.ZipFile, "writestr", writestr)
            return
        fail_on = {"move zip": 1, "move folder": 2}[step]
        original_replace = os.replace

        def replace(source: Any, target: Any, **kwargs: Any) -> None:
            calls["count"] += 1
            if calls["count"] == fail_on:
                raise OSError(28, "No space left on device")
            original_replace(source, target, **kwargs)

        monkeypatch.setattr(os, "replace", replace)

    return arm


@pytest.mark.parametrize("step", ["zip", "move zip", "move folder"])
def test_crash_while_writing_leaves_the_charge_and_no_partial_package(
    app: Flask,
    runner: FlaskCliRunner,
    out: Path,
    failing_write: Callable[[str], None],
    step: str,
) -> None:
    out.mkdir()
    (out / "earlier.txt").write_text("kept")
    failing_write(step)
    result = export(runner, out)
    assert result.exit_code != 0
    assert "No space left on device" in result.output
    assert [kind for kind, *_ in ledger_rows(app)] == ["charge"]
    assert ledger_is_intact(app)
    assert tree(out) == ["earlier.txt"]  # no zip, no folder, no .partial-* staging folder
