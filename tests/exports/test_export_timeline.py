"""The P2 export command: generalized rows that keep k >= 10 and l >= 2, and an ACLED variant."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import date
from pathlib import Path

from flask import Flask
from flask.testing import FlaskCliRunner

from incidents.exports.acled import COLUMN_NAMES
from tests.factories import make_report

CATEGORIES = ["threat", "surveillance", "pressure_relatives", "detention", "assault"]
PERPETRATORS = ["home_state", "host_state", "pro_regime", "unknown"]


def seed(app: Flask, count: int) -> None:
    """Reports in 2025 with a mix of categories and perpetrators, in Serbia and Georgia."""
    for index in range(count):
        make_report(
            app,
            occurred_on=date(2025, 1 + index % 12, 10),
            category=CATEGORIES[index % len(CATEGORIES)],
            perpetrator_type=PERPETRATORS[index % len(PERPETRATORS)],
            country="RS" if index % 3 else "GE",
            city="other",
            narrative=f"DISTINCT-NARRATIVE-{index}",
        )


def read_package(out: Path) -> tuple[list[dict[str, str]], list[dict[str, str]], dict[str, object]]:
    """data.csv rows, acled.csv rows and meta.json of the single package in ``out``."""
    folder = next(path for path in out.iterdir() if path.is_dir())
    data = list(csv.DictReader(io.StringIO((folder / "data.csv").read_text())))
    acled = list(csv.DictReader(io.StringIO((folder / "acled.csv").read_text())))
    return data, acled, json.loads((folder / "meta.json").read_text())


def test_a_timeline_keeps_k_and_l_and_carries_nothing_identifying(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    seed(app, 120)
    out = tmp_path / "out"

    result = runner.invoke(
        args=["export", "timeline", "--from", "2025Q1", "--to", "2025Q4", "--out", str(out)]
    )

    assert result.exit_code == 0, result.output
    data, acled, meta = read_package(out)
    classes = Counter((row["period"], row["area"], row["category_group"]) for row in data)
    assert min(classes.values()) >= 10
    kinds: dict[tuple[str, str, str], set[str]] = {}
    for row in data:
        key = (row["period"], row["area"], row["category_group"])
        kinds.setdefault(key, set()).add(row["perpetrator_type"])
    assert min(len(values) for values in kinds.values()) >= 2
    assert data == sorted(data, key=lambda row: tuple(row.values()))
    assert list(data[0]) == ["period", "area", "category_group", "perpetrator_type"]
    assert meta["k"] == 10
    assert meta["l"] == 2
    assert len(data) + int(str(meta["rows_suppressed"])) == 120
    assert list(acled[0]) == list(COLUMN_NAMES)
    assert {row["event_id_cnty"] for row in acled} == {""}
    assert {row["notes"] for row in acled} == {""}
    assert {row["source"] for row in acled} == {"Undisclosed Source"}
    everything = "".join(
        path.read_text() for path in out.rglob("*") if path.is_file() and path.suffix != ".zip"
    )
    assert "DISTINCT-NARRATIVE" not in everything
    assert "2025-" not in everything.replace(str(meta["generated_on"]), "")


def test_too_few_reports_publish_nothing_and_charge_nothing(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    seed(app, 5)
    out = tmp_path / "out"

    result = runner.invoke(
        args=["export", "timeline", "--from", "2025Q1", "--to", "2025Q4", "--out", str(out)]
    )

    assert result.exit_code != 0
    assert "nothing was charged" in result.output
    assert not out.exists() or not any(out.iterdir())
    ledger = runner.invoke(args=["export", "ledger"])
    assert "0 entries" in ledger.output
