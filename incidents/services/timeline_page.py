"""The public timeline: the P1 export an organizer chose, drawn as a chart without JavaScript.

Only an approved P1 export (differentially private counts by quarter and category group, not by
country) can be shown. The page reads that package's data.json and meta.json; it never queries
reports. The chart is an SVG built here from numbers only (no text from reports), with a band
showing the published 95 % error of each quarter's total.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from incidents import audit
from incidents.db import db
from incidents.models import ExportRequest, SiteSetting, User
from incidents.services.errors import DomainError
from incidents.services.export_requests import EXPORT_DIRECTORY
from incidents.vocabulary import N_

SETTING_KEY = "timeline_export"


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


def publish(request_id: uuid.UUID, *, organizer: User) -> None:
    """Show this approved P1 export (without country breakdown) on /timeline (committed)."""
    row = db.session.get(ExportRequest, request_id)
    if row is None or row.status != "approved" or row.product != "P1" or row.by_country:
        raise TimelineError(N_("Only an approved P1 export without countries can be shown."))
    setting = db.session.get(SiteSetting, SETTING_KEY)
    if setting is None:
        db.session.add(SiteSetting(key=SETTING_KEY, value=str(row.id)))
    else:
        setting.value = str(row.id)
    audit.record(actor=organizer.username, action="timeline.publish", target=str(row.id))
    db.session.commit()


def unpublish(*, organizer: User) -> None:
    """Switch the public timeline off (committed)."""
    setting = db.session.get(SiteSetting, SETTING_KEY)
    if setting is not None:
        db.session.delete(setting)
        audit.record(actor=organizer.username, action="timeline.unpublish")
        db.session.commit()


def published_request_id() -> uuid.UUID | None:
    """The export shown on the timeline, if the organizers switched it on."""
    setting = db.session.scalars(select(SiteSetting).where(SiteSetting.key == SETTING_KEY)).first()
    return uuid.UUID(setting.value) if setting else None


def load(*, instance_path: Path) -> Timeline | None:
    """Read the published export's numbers, or None when nothing is published."""
    request_id = published_request_id()
    row = db.session.get(ExportRequest, request_id) if request_id else None
    if row is None or not row.archive_name:
        return None
    folder = instance_path / EXPORT_DIRECTORY / row.id.hex / row.archive_name.removesuffix(".zip")
    try:
        rows = json.loads((folder / "data.json").read_text(encoding="utf-8"))
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    cell_error = float(meta["error_95"])
    quarters: dict[str, dict[str, int]] = {}
    for item in rows:
        quarters.setdefault(str(item["period"]), {})[str(item["category_group"])] = int(
            item["count"]
        )
    points = [
        QuarterPoint(
            quarter=quarter,
            total=sum(groups.values()),
            # Independent noise per cell: the error of a sum grows with the square root.
            error_95=cell_error * math.sqrt(len(groups)),
            by_group=groups,
        )
        for quarter, groups in quarters.items()
    ]
    return Timeline(points=points, epsilon=float(meta["epsilon"]), cell_error_95=cell_error)


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
