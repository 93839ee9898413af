"""Check a P2 generalized timeline independently with pycanon (k-anonymity, l-diversity).

pycanon pins exact versions of its dependencies, so it lives in its own virtual environment,
never in the project's:

    python3 -m venv /tmp/pycanon-venv
    /tmp/pycanon-venv/bin/pip install pycanon pandas

Then, from the repository root:

    # generate a seeded synthetic register, anonymize it with incidents.exports.timeline,
    # write the table to CSV and have pycanon measure it in its own environment
    .venv/bin/python bench/check_p2_pycanon.py /tmp/pycanon-venv/bin/python
    .venv/bin/python bench/check_p2_pycanon.py /tmp/pycanon-venv/bin/python --rows 100000 --seed 3

    # check any P2 data.csv (e.g. from an export package) with pycanon alone
    /tmp/pycanon-venv/bin/python bench/check_p2_pycanon.py --check path/to/data.csv

The check reads nothing but the CSV: the quasi-identifiers are period, area and category_group,
the sensitive attribute is perpetrator_type. It exits non-zero unless k ≥ 10 and l ≥ 2 (or the
values given with --k/--l), and prints its figures as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from incidents.exports.timeline import IncidentRow

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    # The generating side runs from a checkout, where the package is not installed; the checking
    # side imports nothing from it.
    sys.path.insert(0, str(REPO_ROOT))

QUASI_IDENTIFIERS = ["period", "area", "category_group"]
SENSITIVE_ATTRIBUTE = "perpetrator_type"

COUNTRY_WEIGHTS = {
    "RS": 18,
    "GE": 16,
    "AM": 10,
    "KZ": 9,
    "TR": 9,
    "DE": 8,
    "ME": 6,
    "KG": 3,
    "UZ": 2,
    "CY": 3,
    "IL": 2,
    "AE": 2,
    "PL": 2,
    "CZ": 1,
    "LV": 1,
    "LT": 1,
    "EE": 1,
    "FI": 1,
    "FR": 1,
    "NL": 1,
    "GB": 1,
    "TH": 1,
    "ID": 1,
    "RU": 2,
    "BY": 1,
    "other": 1,
}
"""Where a diaspora register's incidents might come from: a few large host countries, a tail."""

PERPETRATOR_WEIGHTS = {"home_state": 45, "host_state": 25, "pro_regime": 15, "unknown": 15}


def check_csv(path: Path, *, k: int, l: int) -> dict[str, object]:  # noqa: E741
    """Measure the CSV's k and l with pycanon (run this in pycanon's own environment)."""
    import pandas as pd
    from pycanon import anonymity

    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    columns = [*QUASI_IDENTIFIERS, SENSITIVE_ATTRIBUTE]
    if list(frame.columns) != columns:
        raise SystemExit(f"unexpected columns {list(frame.columns)}, wanted {columns}")
    if frame.empty:
        return {"rows": 0, "k": None, "l": None, "sorted": True, "passed": False}
    rows = list(frame.itertuples(index=False, name=None))
    achieved_k = int(anonymity.k_anonymity(frame, QUASI_IDENTIFIERS))
    achieved_l = int(anonymity.l_diversity(frame, QUASI_IDENTIFIERS, [SENSITIVE_ATTRIBUTE]))
    is_sorted = rows == sorted(rows)
    return {
        "rows": len(frame),
        "classes": int(frame.groupby(QUASI_IDENTIFIERS).ngroups),
        "k": achieved_k,
        "l": achieved_l,
        "sorted": is_sorted,
        "passed": achieved_k >= k and achieved_l >= l and is_sorted,
    }


def synthetic_register(rows: int, seed: int) -> list[IncidentRow]:
    """A seeded register of consenting incidents over 2023Q1-2025Q4 with skewed places."""
    from incidents import vocabulary
    from incidents.exports.timeline import IncidentRow

    rng = random.Random(seed)  # noqa: S311 - synthetic data, not secrets
    quarters = [f"{year}Q{number}" for year in (2023, 2024, 2025) for number in (1, 2, 3, 4)]
    categories = [category.code for category in vocabulary.CATEGORIES]
    countries = rng.choices(list(COUNTRY_WEIGHTS), weights=list(COUNTRY_WEIGHTS.values()), k=rows)
    perpetrators = rng.choices(
        list(PERPETRATOR_WEIGHTS), weights=list(PERPETRATOR_WEIGHTS.values()), k=rows
    )
    return [
        IncidentRow(
            quarter=rng.choice(quarters),
            country=country,
            category=rng.choice(categories),
            perpetrator_type=perpetrator,
        )
        for country, perpetrator in zip(countries, perpetrators, strict=True)
    ]


def generate_and_check(arguments: argparse.Namespace) -> int:
    """Anonymize a synthetic register, write it to CSV and check it with pycanon's Python."""
    from incidents.exports.timeline import COLUMNS, anonymize_timeline

    incidents = synthetic_register(arguments.rows, arguments.seed)
    timeline = anonymize_timeline(incidents, k=arguments.k, l=arguments.l)
    out = Path(arguments.out or tempfile.mkdtemp(prefix="p2-check-")) / "data.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(row.as_tuple() for row in timeline.rows)
    checked = subprocess.run(
        [
            arguments.pycanon_python,
            __file__,
            *("--check", str(out), "--k", str(arguments.k), "--l", str(arguments.l)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if checked.returncode not in (0, 1):
        sys.stderr.write(checked.stderr)
        return 2
    pycanon = json.loads(checked.stdout)
    report = {
        "csv": str(out),
        "seed": arguments.seed,
        "incidents": timeline.total,
        "generalization": str(timeline.generalization),
        "suppressed": timeline.suppressed,
        "suppressed_percent": round(100 * timeline.suppressed / max(timeline.total, 1), 2),
        "module_smallest_class": timeline.smallest_class,
        "module_fewest_perpetrator_types": timeline.fewest_perpetrator_types,
        "reason": timeline.reason,
        "pycanon": pycanon,
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))
    agrees = (pycanon["k"], pycanon["l"]) == (
        timeline.smallest_class,
        timeline.fewest_perpetrator_types,
    )
    return 0 if pycanon["passed"] and agrees else 1


def main() -> int:
    """Parse arguments; either check a CSV (pycanon side) or generate one and have it checked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pycanon_python", nargs="?", help="python of pycanon's own venv")
    parser.add_argument(
        "--check", type=Path, help="only check this CSV (run with pycanon's python)"
    )
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--l", type=int, default=2)
    parser.add_argument("--out", help="folder for data.csv (default: a new temporary folder)")
    arguments = parser.parse_args()
    if arguments.check is not None:
        result = check_csv(arguments.check, k=arguments.k, l=arguments.l)
        print(json.dumps(result))
        return 0 if result["passed"] else 1
    if arguments.pycanon_python is None:
        parser.error("give the python of pycanon's venv, or --check CSV")
    return generate_and_check(arguments)


if __name__ == "__main__":
    sys.exit(main())
