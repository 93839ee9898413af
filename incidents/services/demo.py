"""Synthetic reports for trying the register (``flask --app app demo seed``).

Every synthetic report is sealed exactly like a real one, to the configured organizer key, with
made-up text; the clear shell follows plausible proportions (more threats and surveillance than
abductions, most reports from the larger diaspora countries). Nothing here may ever run against
a production database: the command refuses when settings say production.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import date, timedelta

from incidents import crypto, vocabulary
from incidents.db import db
from incidents.keyring import Keyring
from incidents.services.reports import ReportDraft, register_recipient, seal_new_report

CATEGORY_WEIGHTS = {
    "threat": 18, "surveillance": 14, "pressure_relatives": 12, "interrogation": 9,
    "smear": 8, "digital_intrusion": 7, "entry_denial": 6, "document_denial": 5,
    "deportation": 4, "detention": 4, "legal_harassment": 3, "doxxing": 3,
    "pressure_employer": 2, "recruitment": 2, "rally_disruption": 2, "assault": 1,
    "property_economic": 1, "abduction": 1, "other": 2,
}  # fmt: skip
COUNTRY_WEIGHTS = {
    "RS": 25, "GE": 15, "AM": 10, "KZ": 8, "TR": 8, "ME": 7, "DE": 6, "RU": 5,
    "KG": 2, "UZ": 2, "CY": 2, "IL": 2, "AE": 2, "PL": 1, "LV": 1, "FI": 1, "other": 3,
}  # fmt: skip
PERPETRATOR_WEIGHTS = {"home_state": 45, "host_state": 20, "pro_regime": 15, "unknown": 20}
STATUS_WEIGHTS = {"new": 20, "triaged": 20, "assigned": 15, "in_progress": 15, "closed": 25,
                  "duplicate": 3, "rejected": 2}  # fmt: skip


def _pick(rng: random.Random, weights: dict[str, int]) -> str:
    """A weighted random choice."""
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def synthetic_draft(rng: random.Random, *, today: date, months: int) -> ReportDraft:
    """A plausible, entirely made-up report within the last ``months`` months."""
    country = _pick(rng, COUNTRY_WEIGHTS)
    cities = [city.code for city in vocabulary.cities_of(country)]
    occurred = today - timedelta(days=rng.randrange(1, months * 30))
    return ReportDraft(
        category=_pick(rng, CATEGORY_WEIGHTS),
        occurred_on=occurred,
        date_precision=rng.choice(["day", "day", "week", "month", "estimate"]),
        country=country,
        city=rng.choice(cities),
        place_detail=f"Synthetic place {rng.randrange(1000)}",
        narrative="Synthetic demonstration report. " * rng.randrange(1, 20),
        targeted_person=rng.choice(["me", "my brother", "a colleague", ""]),
        perpetrator_type=_pick(rng, PERPETRATOR_WEIGHTS),
        perpetrator_description=rng.choice(["", "two men in a grey car", "a caller"]),
        contact="",
        consent_contact=False,
        consent_statistics=rng.random() < 0.85,
    )


def seed_reports(
    count: int,
    *,
    keyring: Keyring,
    receipt_secret: bytes,
    today: date,
    months: int = 24,
    seed: int | None = None,
    progress: Callable[[int], None] | None = None,
    batch: int = 500,
) -> int:
    """Seal and store ``count`` synthetic reports in batches; return how many were stored."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not secrets
    for recipient in keyring.recipients:
        register_recipient(recipient, role="organizer", today=today)
    stored = 0
    while stored < count:
        size = min(batch, count - stored)
        for _ in range(size):
            _add_synthetic_report(
                rng, keyring=keyring, receipt_secret=receipt_secret, today=today, months=months
            )
        db.session.commit()
        stored += size
        if progress is not None:
            progress(size)
    return stored


def _add_synthetic_report(
    rng: random.Random, *, keyring: Keyring, receipt_secret: bytes, today: date, months: int
) -> None:
    """Seal one synthetic report and add it (and its wraps) to the session."""
    draft = synthetic_draft(rng, today=today, months=months)
    report, wraps = seal_new_report(
        draft,
        report_id=uuid.uuid4(),
        receipt=crypto.new_receipt(),
        keyring=keyring,
        receipt_secret=receipt_secret,
        received_on=min(today, draft.occurred_on + timedelta(days=rng.randrange(0, 30))),
        status=_pick(rng, STATUS_WEIGHTS),
    )
    db.session.add(report)
    db.session.add_all(wraps)
