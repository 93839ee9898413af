"""Apply what a desk produced: key grants, sealed notes and replies, status changes, rotations.

The same function serves the JSON API (online desks) and the upload of an outputs file
(air-gapped desks). A batch is applied in one transaction: either everything in it is stored or
nothing is. Every item is idempotent, so a desk that lost the answer (network failure) simply
sends the batch again: notes and replies already stored are skipped by id, grants replace the
same wrap, status changes already made are skipped, and a rotation already applied is skipped.

The server holds no private key, so it cannot check that a wrap opens; it checks that each blob
is well formed and addressed to a key that may receive it (the organizer, an assigned
volunteer's approved key, or for replies the witness key), and that each item concerns a case
the uploader may work. Only ciphertext and clear status codes are stored.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from sqlalchemy import delete, select

from incidents import audit, crypto
from incidents.bundle import BundleError, b64, sealed_digest, unb64
from incidents.clock import now
from incidents.db import db, forget_deleted_rows
from incidents.keyring import Keyring
from incidents.models import (
    SEALED_FIELDS,
    Addition,
    Attachment,
    EnvelopeWrap,
    Message,
    Note,
    Report,
    User,
    Wrap,
)
from incidents.services.attachments import delete_files
from incidents.services.bundles import can_see, note_recipients
from incidents.services.cases import stage_grant
from incidents.services.errors import DomainError
from incidents.services.followup import stage_envelope
from incidents.services.triage import TRANSITIONS, set_status
from incidents.uploads import PARTIAL_DIRECTORY, attachment_directory
from incidents.vocabulary import N_

VOLUNTEER_TRANSITIONS: dict[str, frozenset[str]] = {
    "assigned": frozenset({"in_progress", "closed"}),
    "in_progress": frozenset({"closed"}),
    "closed": frozenset({"in_progress"}),
}
"""Status changes a volunteer may make on a case assigned to them."""

MAX_ITEMS = 10_000
MAX_SEALED_TEXT = 64 * 1024
"""Largest sealed note or reply accepted (a desk caps the text at 20,000 characters)."""


class OutputError(DomainError):
    """Raised when a desk output is refused; nothing of the batch was stored."""


@dataclass
class OutputSummary:
    """What a batch changed (items already applied are counted as skipped)."""

    grants: int = 0
    notes: int = 0
    replies: int = 0
    statuses: int = 0
    rotations: int = 0
    skipped: int = 0
    _new_files: list[Path] = field(default_factory=list)
    _old_attachments: list[uuid.UUID] = field(default_factory=list)

    def to_dict(self) -> dict[str, int]:
        """JSON-ready counts."""
        return {
            "grants": self.grants,
            "notes": self.notes,
            "replies": self.replies,
            "statuses": self.statuses,
            "rotations": self.rotations,
            "skipped": self.skipped,
        }


def apply_outputs(
    outputs: Mapping[str, Any], *, user: User, keyring: Keyring, instance_path: Path
) -> OutputSummary:
    """Store a batch of desk outputs from ``user`` atomically; raise OutputError or BundleError."""
    summary = OutputSummary()
    try:
        _apply_all(outputs, user=user, keyring=keyring, instance_path=instance_path, into=summary)
        db.session.commit()
    except (KeyError, TypeError, ValueError, crypto.CryptoError) as exc:
        _abandon(summary)
        raise BundleError("the desk outputs are malformed") from exc
    except BaseException:
        _abandon(summary)
        raise
    _publish(summary, instance_path=instance_path)
    return summary


def _abandon(summary: OutputSummary) -> None:
    """Roll back the transaction and delete ciphertext files written for it."""
    db.session.rollback()
    for path in summary._new_files:
        path.unlink(missing_ok=True)


def _publish(summary: OutputSummary, *, instance_path: Path) -> None:
    """After commit: move rotated attachment files to their names, delete the replaced ones."""
    directory = attachment_directory(instance_path)
    for path in summary._new_files:
        final = directory / path.name
        os.replace(path, final)
        os.utime(final, (0, 0))
    if summary._old_attachments:
        delete_files(summary._old_attachments, instance_path=instance_path)
    if summary.rotations:
        forget_deleted_rows()


def _items(outputs: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    """The list of items of one kind (empty if absent); refuse absurd sizes."""
    items = outputs.get(name, [])
    if not isinstance(items, list) or len(items) > MAX_ITEMS:
        raise BundleError(f"'{name}' must be a list of at most {MAX_ITEMS} items")
    return items


def _apply_all(
    outputs: Mapping[str, Any],
    *,
    user: User,
    keyring: Keyring,
    instance_path: Path,
    into: OutputSummary,
) -> None:
    """Stage every item of the batch in the current transaction."""
    for item in _items(outputs, "grants"):
        _apply_grant(item, user=user, into=into)
    for item in _items(outputs, "notes"):
        _apply_envelope(item, model=Note, user=user, keyring=keyring, into=into)
    for item in _items(outputs, "replies"):
        _apply_envelope(item, model=Message, user=user, keyring=keyring, into=into)
    for item in _items(outputs, "statuses"):
        _apply_status(item, user=user, into=into)
    for item in _items(outputs, "rotations"):
        _apply_rotation(item, user=user, keyring=keyring, instance_path=instance_path, into=into)


def _case(item: Mapping[str, Any], *, user: User) -> Report:
    """The report an item is about, if ``user`` may work it; else OutputError."""
    report_id = uuid.UUID(str(item["report_id"]))
    report = db.session.get(Report, report_id)
    if report is None or not can_see(user, report_id):
        raise OutputError(N_("A desk output concerns a case you cannot work."))
    return report


def _require_organizer(user: User) -> None:
    """Refuse organizer-only outputs from anyone else."""
    if user.role != "organizer":
        raise OutputError(N_("Only organizers can grant cases or rotate their keys."))


def _apply_grant(item: Mapping[str, Any], *, user: User, into: OutputSummary) -> None:
    """A wrap of the report key (and of each envelope key) to an assigned volunteer's key."""
    _require_organizer(user)
    report = _case(item, user=user)
    envelopes = {uuid.UUID(key): unb64(blob) for key, blob in dict(item["envelopes"]).items()}
    stage_grant(report, unb64(item["wrap"]), envelopes=envelopes, actor=user)
    into.grants += 1


def allowed_keys(report: Report, *, keyring: Keyring) -> set[str]:
    """Key ids that may receive envelopes of this report: the organizer key(s), and the approved,
    not retired key of each active assigned volunteer (the recipients bundles list)."""
    return {entry["key_id"] for entry in note_recipients(report, keyring=keyring)}


def _check_wraps(
    wraps: Mapping[str, bytes], *, allowed: Iterable[str], required: Iterable[str]
) -> None:
    """Each wrap must name its own key id in its header, be for an allowed key, and the required
    keys must all be present."""
    allowed_set = set(allowed)
    for key_id, blob in wraps.items():
        if crypto.wrap_key_id(blob).hex() != key_id:
            raise OutputError(N_("A wrap does not match the key it is filed under."))
        if key_id not in allowed_set:
            raise OutputError(N_("A wrap is addressed to a key that may not read this case."))
    if not set(required) <= set(wraps):
        raise OutputError(N_("A sealed note or reply must be readable by the organizer."))


def _decode_wraps(raw: Mapping[str, Any]) -> dict[str, bytes]:
    """Wraps by key id from their JSON form."""
    return {str(key_id): unb64(blob) for key_id, blob in dict(raw).items()}


def _apply_envelope(
    item: Mapping[str, Any],
    *,
    model: type[Note] | type[Message],
    user: User,
    keyring: Keyring,
    into: OutputSummary,
) -> None:
    """A note (to staff) or a reply (to the witness too), sealed on the desk under its own key."""
    report = _case(item, user=user)
    envelope_id = uuid.UUID(str(item["id"]))
    existing = cast("Note | Message | None", db.session.get(model, envelope_id))
    if existing is not None:
        if existing.report_id != report.id:
            raise OutputError(N_("A desk output concerns a case you cannot work."))
        into.skipped += 1
        return
    if _envelope_exists(envelope_id):
        raise OutputError(N_("A note or reply reuses the id of something else."))
    sealed = unb64(item["sealed"])
    crypto.check_sealed_field(sealed)
    if len(sealed) > MAX_SEALED_TEXT:
        raise OutputError(N_("A note or reply is too long."))
    wraps = _decode_wraps(item["wraps"])
    allowed = allowed_keys(report, keyring=keyring)
    required = {keyring.organizer.key_id_hex}
    if model is Message:
        witness = crypto.PublicKey.from_bytes(report.witness_public_key).key_id_hex
        allowed.add(witness)
        required.add(witness)
    _check_wraps(wraps, allowed=allowed, required=required)
    stage_envelope(
        model,
        report_id=report.id,
        envelope_id=envelope_id,
        sealed=sealed,
        wraps=wraps,
        author_id=user.id,
        created_on=now().date(),
    )
    kind = "note" if model is Note else "reply"
    audit.record(actor=user.username, action=f"case.{kind}", target=str(report.id))
    if model is Note:
        into.notes += 1
    else:
        into.replies += 1


def _envelope_exists(envelope_id: uuid.UUID) -> bool:
    """True if any report, addition, reply, note or envelope wrap already uses this id."""
    for model in (Report, Addition, Message, Note):
        if db.session.get(model, envelope_id) is not None:
            return True
    wrap = db.session.scalar(
        select(EnvelopeWrap.envelope_id).where(EnvelopeWrap.envelope_id == envelope_id).limit(1)
    )
    return wrap is not None


def _apply_status(item: Mapping[str, Any], *, user: User, into: OutputSummary) -> None:
    """A status change made on the desk (skipped if the case already has that status)."""
    report = _case(item, user=user)
    new_status = str(item["to"])
    if report.status == new_status:
        into.skipped += 1
        return
    if report.status != str(item["from"]):
        raise OutputError(N_("The case's status changed meanwhile; sync and try again."))
    table = TRANSITIONS if user.role == "organizer" else VOLUNTEER_TRANSITIONS
    if new_status not in table.get(report.status, frozenset()):
        raise OutputError(
            N_("The case's status changed meanwhile; sync and try again."),
        )
    set_status(report, new_status, actor=user, reason=str(item.get("reason", "")), check=False)
    db.session.flush()
    into.statuses += 1


def _apply_rotation(
    item: Mapping[str, Any],
    *,
    user: User,
    keyring: Keyring,
    instance_path: Path,
    into: OutputSummary,
) -> None:
    """Replace a case's ciphertext with the same content sealed under fresh data keys.

    The desk re-sealed every field, addition, reply, note and attachment under new keys and
    wrapped them to the remaining recipients. The stored envelopes must be exactly the ones the
    desk re-sealed (a witness may have added something meanwhile: then sync and rotate again).
    """
    _require_organizer(user)
    report = _case(item, user=user)
    attachments = list(item["attachments"])
    stored = sealed_digest({name: b64(blob) for name, blob in report.sealed_fields().items()})
    if stored != str(item["base"]):
        if stored == sealed_digest(dict(item["sealed"])):
            into.skipped += 1  # this very rotation was applied already
            return
        raise OutputError(N_("The case changed meanwhile; sync and try again."))
    allowed = allowed_keys(report, keyring=keyring)
    witness = crypto.PublicKey.from_bytes(report.witness_public_key).key_id_hex
    organizer = {keyring.organizer.key_id_hex}
    _rotate_report_fields(report, item, allowed=allowed, required=organizer)
    _rotate_envelopes(report, item, allowed=allowed, organizer=organizer, witness=witness)
    _rotate_attachments(report, attachments, instance_path=instance_path, into=into)
    audit.record(
        actor=user.username,
        action="case.rotate",
        target=str(report.id),
        details={"recipients": len(item["wraps"]), "dropped": len(item.get("drop", []))},
    )
    into.rotations += 1


def _rotate_report_fields(
    report: Report, item: Mapping[str, Any], *, allowed: set[str], required: set[str]
) -> None:
    """New sealed fields and new report wraps (old wraps deleted)."""
    sealed = {str(name): unb64(blob) for name, blob in dict(item["sealed"]).items()}
    if set(sealed) != set(report.sealed_fields()):
        raise OutputError(N_("The case changed meanwhile; sync and try again."))
    wraps = _decode_wraps(item["wraps"])
    _check_wraps(wraps, allowed=allowed, required=required)
    for name, blob in sealed.items():
        if name not in SEALED_FIELDS:
            raise OutputError(N_("The case changed meanwhile; sync and try again."))
        crypto.check_sealed_field(blob)
        setattr(report, f"{name}_sealed", blob)
    db.session.execute(delete(Wrap).where(Wrap.report_id == report.id))
    for key_id, blob in wraps.items():
        db.session.add(Wrap(report_id=report.id, key_id=key_id, blob=blob))


def _rotate_envelopes(
    report: Report,
    item: Mapping[str, Any],
    *,
    allowed: set[str],
    organizer: set[str],
    witness: str,
) -> None:
    """Additions, replies and notes re-sealed under new keys; every old envelope wrap deleted."""
    stored: dict[uuid.UUID, Addition | Message | Note] = {}
    for model in (Addition, Message, Note):
        rows = cast(
            "Sequence[Addition | Message | Note]",
            db.session.scalars(select(model).where(model.report_id == report.id)).all(),
        )
        stored.update((row.id, row) for row in rows)
    entries = {uuid.UUID(str(entry["id"])): entry for entry in item["envelopes"]}
    dropped = {uuid.UUID(str(envelope_id)) for envelope_id in item.get("drop", [])}
    if entries.keys() & dropped or set(entries) | dropped != set(stored):
        raise OutputError(N_("The case changed meanwhile; sync and try again."))
    for envelope_id in dropped:
        row = stored.pop(envelope_id)
        if isinstance(row, Addition):  # only staff notes and replies can be sealed wrongly
            raise OutputError(N_("The case changed meanwhile; sync and try again."))
        db.session.delete(row)
    db.session.execute(delete(EnvelopeWrap).where(EnvelopeWrap.report_id == report.id))
    db.session.flush()
    for envelope_id, row in stored.items():
        entry = entries[envelope_id]
        wraps = _decode_wraps(entry["wraps"])
        extra = {witness} if isinstance(row, Message) else set()
        _check_wraps(wraps, allowed={*allowed, *extra}, required=organizer | extra)
        blob = unb64(entry["sealed"])
        crypto.check_sealed_field(blob)
        if isinstance(row, Addition):
            row.text_sealed = blob
        else:
            row.body_sealed = blob
        for key_id, wrap in wraps.items():
            db.session.add(
                EnvelopeWrap(envelope_id=envelope_id, key_id=key_id, report_id=report.id, blob=wrap)
            )


def _rotate_attachments(
    report: Report, entries: list[Any], *, instance_path: Path, into: OutputSummary
) -> None:
    """Attachments re-encrypted under the new keys get new ids (new files written before
    commit, published after it); the old rows and files go."""
    stored = {
        row.id: row
        for row in db.session.scalars(
            select(Attachment).where(Attachment.report_id == report.id)
        ).all()
    }
    replaced = {uuid.UUID(str(entry["replaces"])) for entry in entries}
    if replaced != set(stored):
        raise OutputError(N_("The case changed meanwhile; sync and try again."))
    partial = attachment_directory(instance_path) / PARTIAL_DIRECTORY
    partial.mkdir(parents=True, exist_ok=True)
    new_ids = [uuid.UUID(str(entry["id"])) for entry in entries]
    if len(set(new_ids)) != len(new_ids) or any(
        new_id in stored or db.session.get(Attachment, new_id) is not None for new_id in new_ids
    ):
        raise OutputError(N_("The case changed meanwhile; sync and try again."))
    for entry in entries:
        old = stored[uuid.UUID(str(entry["replaces"]))]
        new_id = uuid.UUID(str(entry["id"]))
        envelope_id = report.id if old.envelope_id == report.id else old.envelope_id
        data = unb64(entry["data"])
        if len(data) != crypto.stream_ciphertext_length(old.padded_size):
            raise OutputError(N_("The case changed meanwhile; sync and try again."))
        path = partial / new_id.hex
        into._new_files.append(path)
        with path.open("xb") as handle:
            handle.write(data)
        db.session.delete(old)
        db.session.flush()
        db.session.add(
            Attachment(
                id=new_id,
                report_id=report.id,
                envelope_id=envelope_id,
                seq=old.seq,
                padded_size=old.padded_size,
                meta_sealed=unb64(entry["meta"]),
            )
        )
        into._old_attachments.append(old.id)
