"""The public timeline: P1 series chosen by organizers, drawn as a chart without JavaScript.

Only an approved P1 export (differentially private counts by quarter and category group, not by
country) can be shown, and **published quarters are frozen**: once a quarter's numbers are on
the public page they never change. Publishing a newer export only adds the quarters the page
does not have yet, so the public can never average several noisy releases of the same quarter.
The frozen series is stored as JSON in a site setting; the page never queries reports. The chart
is an SVG built here from numbers only, with a band showing each quarter's 95 % error.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from incidents import audit
from incidents.db import db
from incidents.models import ExportRequest, SiteSetting, User
from incidents.services.errors import DomainError
from incidents.services.export_requests import EXPORT_DIRECTORY
from incidents.vocabulary import N_

SERIES_KEY = "timeline_series"
"""The frozen public series: {"quarters": {quarter: {"groups": {...}, "cell_error_95": x,
"epsilon": e}}}."""
SWITCH_KEY = "timeline_on"


class TimelineError(DomainError):
    """Raised when an export cannot be shown on the public timeline."""


@dataclass(frozen=True)
class QuarterPoint:
    """One quarter of the series: the noisy total of all groups and its 95 % error."""

    quarter: str
    total: int
    error_95: float
    by_group: dict[str, int]


@dataclass(frozen=True)
class Timeline:
    """What the page shows."""

    points: list[QuarterPoint]
    epsilon: float
    cell_error_95: float


def publish(request_id: uuid.UUID, *, organizer: User, instance_path: Path) -> list[str]:
    """Add the quarters of an approved P1 export that are not public yet; switch the page on.

    Returns the quarters added (already published quarters keep their first numbers).
    """
    row = db.session.get(ExportRequest, request_id)
    if row is None or row.status != "approved" or row.product != "P1" or row.by_country:
        raise TimelineError(N_("Only an approved P1 export without countries can be shown."))
    released = _read_package(row, instance_path=instance_path)
    if released is None:
        raise TimelineError(N_("No such export."))
    series = _series()
    added = [quarter for quarter in released if quarter not in series]
    for quarter in added:
        series[quarter] = released[quarter]
    _store(SERIES_KEY, json.dumps({"quarters": series}, sort_keys=True))
    _store(SWITCH_KEY, "1")
    audit.record(
        actor=organizer.username,
        action="timeline.publish",
        target=str(row.id),
        details={"quarters_added": ",".join(sorted(added)) or "none"},
    )
    db.session.commit()
    return sorted(added)


def unpublish(*, organizer: User) -> None:
    """Hide the public timeline (committed); the frozen numbers are kept for later."""
    switch = db.session.get(SiteSetting, SWITCH_KEY)
    if switch is not None:
        db.session.delete(switch)
        audit.record(actor=organizer.username, action="timeline.unpublish")
        db.session.commit()


def is_on() -> bool:
    """True when the public timeline is switched on."""
    return db.session.get(SiteSetting, SWITCH_KEY) is not None


def published_quarters() -> list[str]:
    """Quarters whose numbers are frozen on the public timeline."""
    return sorted(_series())


def load() -> Timeline | None:
    """The frozen public series, or None when the page is off or empty."""
    series = _series()
    if not is_on() or not series:
        return None
    points = []
    for quarter in sorted(series):
        entry = series[quarter]
        groups = {str(key): int(value) for key, value in dict(entry["groups"]).items()}
        cell_error = float(entry["cell_error_95"])
        points.append(
            QuarterPoint(
                quarter=quarter,
                total=sum(groups.values()),
                # Independent noise per cell: the error of a sum grows with the square root.
                error_95=cell_error * math.sqrt(len(groups)),
                by_group=groups,
            )
        )
    first = series[sorted(series)[0]]
    return Timeline(
        points=points,
        epsilon=float(first["epsilon"]),
        cell_error_95=float(first["cell_error_95"]),
    )


def _series() -> dict[str, dict[str, Any]]:
    """The frozen series from its setting (empty when nothing was ever published)."""
    setting = db.session.get(SiteSetting, SERIES_KEY)
    if setting is None:
        return {}
    quarters: dict[str, dict[str, Any]] = json.loads(setting.value)["quarters"]
    return quarters


def _store(key: str, value: str) -> None:
    """Set a site setting (within the caller's transaction)."""
    setting = db.session.get(SiteSetting, key)
    if setting is None:
        db.session.add(SiteSetting(key=key, value=value))
    else:
        setting.value = value


def _read_package(row: ExportRequest, *, instance_path: Path) -> dict[str, dict[str, Any]] | None:
    """Per-quarter numbers of an approved P1 package, or None if its files are gone."""
    if not row.archive_name:
        return None
    folder = instance_path / EXPORT_DIRECTORY / row.id.hex / row.archive_name.removesuffix(".zip")
    try:
        rows = json.loads((folder / "data.json").read_text(encoding="utf-8"))
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    groups: dict[str, dict[str, int]] = {}
    for item in rows:
        groups.setdefault(str(item["period"]), {})[str(item["category_group"])] = int(item["count"])
    return {
        quarter: {"groups": counts, "cell_error_95": meta["error_95"], "epsilon": meta["epsilon"]}
        for quarter, counts in groups.items()
    }


@dataclass(frozen=True)
class Chart:
    """Coordinates of the SVG chart, computed here so the template only draws."""

    width: int
    height: int
    line: str
    band: str
    points: list[tuple[float, float, QuarterPoint]]
    y_ticks: list[tuple[float, int]]


def chart(timeline: Timeline, *, width: int = 640, height: int = 280) -> Chart:
    """Scale the series into an SVG viewport (margins for axis labels)."""
    left, right, top, bottom = 48, 40, 16, 40
    points = timeline.points
    top_value = max([p.total + p.error_95 for p in points] + [1.0])
    step = (width - left - right) / max(1, len(points) - 1)

    def y(value: float) -> float:
        """Vertical position of a value."""
        return top + (height - top - bottom) * (1 - max(0.0, value) / top_value)

    placed = [(left + index * step, y(point.total), point) for index, point in enumerate(points)]
    upper = [f"{x:.1f},{y(p.total + p.error_95):.1f}" for x, _, p in placed]
    lower = [f"{x:.1f},{y(p.total - p.error_95):.1f}" for x, _, p in reversed(placed)]
    ticks = sorted({int(top_value * fraction) for fraction in (0, 0.25, 0.5, 0.75, 1.0)})
    return Chart(
        width=width,
        height=height,
        line=" ".join(f"{x:.1f},{yy:.1f}" for x, yy, _ in placed),
        band=" ".join(upper + lower),
        points=placed,
        y_ticks=[(y(tick), tick) for tick in ticks],
    )
