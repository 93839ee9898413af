"""Export packages: CSV, JSON, a CSVW/JSON-LD description and meta.json, zipped.

Files are written into a hidden temporary folder next to the destination and renamed into place
only when complete, so a crash never leaves a half-written package. Rows follow the grid's fixed
order; no file holds ids, exact dates, timestamps or free text from reports.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DATA_FILES = ("data.csv", "data.json", "data.csv-metadata.json")


@dataclass(frozen=True)
class Column:
    """A column of the exported table and how CSVW describes it."""

    name: str
    title: str
    datatype: str
    description: str


def sha256_hex(data: bytes) -> str:
    """Lowercase hex SHA-256."""
    return hashlib.sha256(data).hexdigest()


def csv_bytes(columns: Sequence[Column], rows: Sequence[Mapping[str, object]]) -> bytes:
    """RFC 4180 CSV with a header row, UTF-8, LF line ends."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[c.name for c in columns], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def csvw_bytes(columns: Sequence[Column], *, title: str) -> bytes:
    """A CSVW (W3C CSV on the Web) JSON-LD description of data.csv."""
    description = {
        "@context": "http://www.w3.org/ns/csvw",
        "url": "data.csv",
        "dc:title": title,
        "tableSchema": {
            "columns": [
                {
                    "name": column.name,
                    "titles": column.title,
                    "datatype": column.datatype,
                    "dc:description": column.description,
                }
                for column in columns
            ],
        },
    }
    return json.dumps(description, indent=2, ensure_ascii=False).encode("utf-8")


def write_package(
    destination: Path,
    *,
    name: str,
    columns: Sequence[Column],
    rows: Sequence[Mapping[str, object]],
    meta: Mapping[str, object],
    title: str,
    extra_files: Mapping[str, bytes] | None = None,
) -> tuple[Path, str]:
    """Write ``name``.zip (and its files in a folder beside it); return the zip and its SHA-256.

    meta.json receives the SHA-256 of every data file before it is written itself.
    """
    destination.mkdir(parents=True, exist_ok=True)
    files = {
        "data.csv": csv_bytes(columns, rows),
        "data.json": json.dumps(list(rows), indent=2, ensure_ascii=False).encode("utf-8"),
        "data.csv-metadata.json": csvw_bytes(columns, title=title),
        **(extra_files or {}),
    }
    full_meta = {**meta, "files": {file: sha256_hex(data) for file, data in files.items()}}
    files["meta.json"] = json.dumps(full_meta, indent=2, ensure_ascii=False).encode("utf-8")
    folder, archive = destination / name, destination / f"{name}.zip"
    if folder.exists() or archive.exists():
        raise FileExistsError(f"{folder} or {archive} already exists")
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=destination))
    try:
        for file, data in files.items():
            (staging / file).write_bytes(data)
        zip_path = staging / "package.zip"
        with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
            for file, data in files.items():
                info = zipfile.ZipInfo(f"{name}/{file}", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                bundle.writestr(info, data)
        digest = sha256_hex(zip_path.read_bytes())
        os.replace(zip_path, archive)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        archive.unlink(missing_ok=True)
        raise
    return archive, digest
