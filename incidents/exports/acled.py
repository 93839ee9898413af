"""The ACLED-compatible column variant of a P2 timeline (``acled.csv``).

ACLED codes events; the register publishes generalized incidents, so the mapping is deliberately
coarse: ids, dates, places, coordinates, notes and fatalities stay empty; actors are generic;
the source is "Undisclosed Source". ACLED's ``time_precision`` (1 day, 2 week, 3 month) and
``geo_precision`` (1 town, 2 near a town, 3 larger region) are extended with codes for the
coarser levels P2 uses; every extension code is documented in docs/exports.md.
"""

from __future__ import annotations

from collections.abc import Sequence

from incidents.exports import formats
from incidents.exports.timeline import ALL, Generalization, TimelineRow

TIME_PRECISION = {"quarter": 4, "half_year": 5, "year": 6}
"""Extension codes: 4 quarter, 5 half-year, 6 year (ACLED itself stops at 3, month)."""
GEO_PRECISION = {"country": 4, "region": 5, ALL: 6}
"""Extension codes: 4 country, 5 group of countries, 6 unspecified (ACLED stops at 3)."""
EVENT_TYPES = {
    "mobility": ("Strategic developments", "Other"),
    "liberty": ("Strategic developments", "Arrests"),
    "privacy": ("Strategic developments", "Other"),
    "intimidation": ("Strategic developments", "Other"),
    "physical": ("Violence against civilians", "Attack"),
    ALL: ("Strategic developments", "Other"),
}
ACTORS = {
    "home_state": "Agents of the home state (unidentified)",
    "host_state": "Authorities of the host country (unidentified)",
    "pro_regime": "Pro-regime non-state actors (unidentified)",
    "unknown": "Unidentified actor",
}
COLUMN_NAMES = (
    "event_id_cnty", "event_date", "year", "time_precision", "disorder_type", "event_type",
    "sub_event_type", "actor1", "actor2", "country", "admin1", "location", "latitude",
    "longitude", "geo_precision", "source", "notes", "fatalities", "period",
)  # fmt: skip


def acled_columns() -> list[formats.Column]:
    """The ACLED column set (plus ``period``, the register's own time field)."""
    return [formats.Column(name, name, "string", "ACLED column") for name in COLUMN_NAMES]


def acled_rows(
    rows: Sequence[TimelineRow], generalization: Generalization
) -> list[dict[str, object]]:
    """One ACLED-style row per published P2 row, in the same (sorted) order."""
    names = generalization.names
    result: list[dict[str, object]] = []
    for row in rows:
        event_type, sub_event_type = EVENT_TYPES.get(row.category_group, EVENT_TYPES[ALL])
        disorder = (
            "Political violence" if row.category_group == "physical" else "Strategic developments"
        )
        result.append(
            {
                "event_id_cnty": "",
                "event_date": "",
                "year": row.period[:4] if row.period[:4].isdigit() else "",
                "time_precision": TIME_PRECISION[names["period"]],
                "disorder_type": disorder,
                "event_type": event_type,
                "sub_event_type": sub_event_type,
                "actor1": ACTORS.get(row.perpetrator_type, ACTORS["unknown"]),
                "actor2": "Civilians (exiles and their relatives)",
                "country": row.area,
                "admin1": "",
                "location": "",
                "latitude": "",
                "longitude": "",
                "geo_precision": GEO_PRECISION[names["area"]],
                "source": "Undisclosed Source",
                "notes": "",
                "fatalities": "",
                "period": row.period,
            }
        )
    return result
