"""The privacy budget ledger (``incidents.exports.ledger``): charges, the yearly cap, the chain.

Tampering is done as an intruder with database access would: SQL straight on the
``export_ledger`` table. Editing, deleting or reordering entries inside the chain is detected
and the first broken entry named. Dropping the newest entries leaves a valid, shorter chain; it
shows only as a different head hash (as for the audit log).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from incidents.db import db
from incidents.exports import ledger
from incidents.exports.ledger import BudgetExceededError
from incidents.models import LedgerEntry
from incidents.services.errors import DomainError

LEDGER = LedgerEntry.__table__
CAP = Decimal(4)


@pytest.fixture
def context(app: Flask) -> Iterator[None]:
    """An application context for calling the ledger directly."""
    with app.app_context():
        yield
        db.session.remove()


def charge(epsilon: str, *, cap: Decimal = CAP, scope: str = "2025Q1-2025Q4") -> str:
    """Charge a P1 export of ``epsilon`` (decimal text); return its export id."""
    return ledger.charge(
        actor="organizer-a", product="P1", scope=scope, epsilon=Decimal(epsilon), yearly_cap=cap
    )


def entries() -> list[LedgerEntry]:
    """Every ledger entry, read back from the database, in chain order."""
    db.session.expire_all()
    return list(db.session.scalars(sa.select(LedgerEntry).order_by(LedgerEntry.seq)))


def tamper(statement: sa.Executable, **params: Any) -> None:
    """Run one SQL statement on the ledger table, outside the ledger module, and commit."""
    db.session.execute(statement, params)
    db.session.commit()
    db.session.expire_all()


def this_year() -> int:
    """The current UTC year, which the ledger charges to."""
    return datetime.now(UTC).year


# --------------------------------------------------------------------------- charging


@pytest.mark.usefixtures("context")
def test_charges_accumulate_within_the_year() -> None:
    charge("1")
    charge("0.5")
    assert ledger.spent_in(this_year()) == Decimal("1.5")
    assert [entry.kind for entry in entries()] == ["charge", "charge"]


@pytest.mark.usefixtures("context")
def test_nothing_is_spent_in_a_year_without_charges() -> None:
    charge("1")
    assert ledger.spent_in(this_year() - 1) == Decimal(0)


@pytest.mark.usefixtures("context")
def test_each_calendar_year_has_its_own_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    moments = iter(
        [
            datetime(2025, 12, 31, 23, 59, 58, tzinfo=UTC),  # charge() reads the year
            datetime(2025, 12, 31, 23, 59, 58, tzinfo=UTC),  # the entry's time
            datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC),
            datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC),
            datetime(2026, 3, 1, tzinfo=UTC),
        ]
    )
    monkeypatch.setattr(ledger, "now", lambda: next(moments))
    charge("3")
    charge("3")  # a new year: its own 4
    with pytest.raises(BudgetExceededError):
        charge("2")  # 3 + 2 > 4 within 2026
    assert ledger.spent_in(2025) == Decimal(3)
    assert ledger.spent_in(2026) == Decimal(3)
    assert [entry.year for entry in entries()] == [2025, 2026]
    assert ledger.verify().is_intact


@pytest.mark.usefixtures("context")
def test_charge_that_would_pass_the_cap_is_refused_and_adds_no_entry() -> None:
    charge("3")
    before = entries()
    with pytest.raises(BudgetExceededError) as refused:
        charge("1.5")
    message = str(refused.value)
    assert "1.5" in message  # asked
    assert "only 1 of this year's 4 is left" in message
    assert "Nothing was computed or charged" in message
    assert [entry.hash for entry in entries()] == [entry.hash for entry in before]
    assert ledger.spent_in(this_year()) == Decimal(3)


@pytest.mark.usefixtures("context")
def test_charge_that_exactly_reaches_the_cap_is_allowed() -> None:
    charge("2.5")
    charge("1.5")
    assert ledger.spent_in(this_year()) == CAP
    with pytest.raises(BudgetExceededError, match="only 0 of"):
        charge("0.01")
    assert len(entries()) == 2


@pytest.mark.usefixtures("context")
def test_amounts_add_up_exactly_as_decimals() -> None:
    charge("0.5")
    charge("0.5")
    charge("3")
    assert ledger.spent_in(this_year()) == Decimal(4)
    assert [entry.epsilon for entry in entries()] == ["0.5", "0.5", "3"]


@pytest.mark.usefixtures("context")
def test_ten_charges_of_a_tenth_exactly_reach_a_cap_of_one() -> None:
    # In binary floating point 0.1 added ten times is 0.9999999999999999: not the cap.
    for _ in range(10):
        charge("0.1", cap=Decimal(1))
    assert ledger.spent_in(this_year()) == Decimal(1)
    with pytest.raises(BudgetExceededError):
        charge("0.1", cap=Decimal(1))


@pytest.mark.parametrize("epsilon", ["0", "-1", "-0.5", "NaN", "sNaN", "-Infinity"])
@pytest.mark.usefixtures("context")
def test_non_positive_epsilon_is_refused_without_an_entry(epsilon: str) -> None:
    with pytest.raises(BudgetExceededError, match="positive"):
        charge(epsilon)
    assert entries() == []


@pytest.mark.usefixtures("context")
def test_infinite_epsilon_is_refused_by_the_cap() -> None:
    with pytest.raises(BudgetExceededError, match="Nothing was computed or charged"):
        charge("Infinity")
    assert entries() == []


@pytest.mark.usefixtures("context")
def test_completions_record_the_package_hash_and_cost_nothing() -> None:
    export_id = charge("2")
    ledger.complete(export_id, actor="organizer-a", output_sha256="ab" * 32)
    charged, completed = entries()
    assert (charged.kind, completed.kind) == ("charge", "complete")
    assert completed.export_id == export_id
    assert completed.output_sha256 == "ab" * 32
    assert completed.epsilon == "0"
    assert (completed.product, completed.scope) == (charged.product, charged.scope)
    assert ledger.spent_in(this_year()) == Decimal(2)


@pytest.mark.usefixtures("context")
def test_completing_an_unknown_export_is_refused() -> None:
    charge("1")
    with pytest.raises(DomainError, match="No such export"):
        ledger.complete("00000000-0000-4000-8000-000000000000", actor="a", output_sha256="")
    assert len(entries()) == 1


@pytest.mark.usefixtures("context")
def test_each_charge_gets_its_own_export_id() -> None:
    assert len({charge("1"), charge("1")}) == 2


# --------------------------------------------------------------------------- the chain


@pytest.fixture
def chain(context: None) -> list[LedgerEntry]:
    """Three entries (seq 1, 2, 3): two charges and a completion."""
    first = charge("1", scope="2025Q1-2025Q4")
    charge("0.5", scope="2024Q1-2024Q4 by country")
    ledger.complete(first, actor="organizer-a", output_sha256="cd" * 32)
    return entries()


def test_untouched_chain_verifies(chain: list[LedgerEntry]) -> None:
    report = ledger.verify()
    assert report.is_intact
    assert report.checked == 3
    assert report.head_hash == chain[-1].hash
    assert [entry.seq for entry in chain] == [1, 2, 3]
    assert chain[0].prev_hash == "0" * 64
    assert [entry.prev_hash for entry in chain[1:]] == [entry.hash for entry in chain[:-1]]


@pytest.mark.usefixtures("context")
def test_empty_ledger_verifies() -> None:
    report = ledger.verify()
    assert (report.is_intact, report.checked) == (True, 0)


@pytest.mark.usefixtures("chain")
def test_edited_epsilon_breaks_the_chain_at_that_entry() -> None:
    tamper(sa.update(LEDGER).where(LEDGER.c.seq == 2).values(epsilon="0.05"))
    report = ledger.verify()
    assert not report.is_intact
    assert report.broken_seq == 2
    assert report.checked == 1


@pytest.mark.usefixtures("chain")
def test_edited_scope_breaks_the_chain_at_that_entry() -> None:
    tamper(sa.update(LEDGER).where(LEDGER.c.seq == 1).values(scope="2023Q1-2023Q4"))
    assert ledger.verify().broken_seq == 1


@pytest.mark.usefixtures("chain")
def test_edited_package_hash_breaks_the_chain_at_that_entry() -> None:
    tamper(sa.update(LEDGER).where(LEDGER.c.seq == 3).values(output_sha256="ef" * 32))
    assert ledger.verify().broken_seq == 3


@pytest.mark.usefixtures("chain")
def test_edited_year_breaks_the_chain_at_that_entry() -> None:
    # Moving a charge to another year would free this year's budget.
    tamper(sa.update(LEDGER).where(LEDGER.c.seq == 2).values(year=LEDGER.c.year - 1))
    assert ledger.verify().broken_seq == 2


@pytest.mark.usefixtures("chain")
def test_deleted_middle_entry_breaks_the_chain() -> None:
    tamper(sa.delete(LEDGER).where(LEDGER.c.seq == 2))
    report = ledger.verify()
    assert report.broken_seq == 3
    assert report.checked == 1


@pytest.mark.usefixtures("chain")
def test_reordered_pair_breaks_the_chain() -> None:
    tamper(sa.update(LEDGER).where(LEDGER.c.seq == 1).values(seq=-1))
    tamper(sa.update(LEDGER).where(LEDGER.c.seq == 2).values(seq=1))
    tamper(sa.update(LEDGER).where(LEDGER.c.seq == -1).values(seq=2))
    assert ledger.verify().broken_seq == 1


def test_dropping_the_newest_entry_shows_only_as_another_head(chain: list[LedgerEntry]) -> None:
    hashes = [entry.hash for entry in chain]
    tamper(sa.delete(LEDGER).where(LEDGER.c.seq == 3))
    report = ledger.verify()
    assert report.is_intact
    assert report.head_hash == hashes[1] != hashes[2]


def test_rehashing_an_edit_without_its_successors_is_still_caught(
    chain: list[LedgerEntry],
) -> None:
    # An intruder lowers a charge and recomputes that entry's own hash, but not the next links.
    tamper(sa.update(LEDGER).where(LEDGER.c.seq == 1).values(epsilon="0.1"))
    edited = entries()[0]
    new_hash = ledger.entry_hash(edited, prev_hash=edited.prev_hash)
    tamper(sa.update(LEDGER).where(LEDGER.c.seq == 1).values(hash=new_hash))
    assert ledger.verify().broken_seq == 2
    assert ledger.spent_in(this_year()) == Decimal("0.6")  # what the edit was after
