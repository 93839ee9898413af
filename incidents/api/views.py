"""JSON API for the desk, authenticated by a personal API token (``Authorization: Bearer``).

Every request also names the key the desk holds (``X-Incidents-Key-Id``); the server answers
only for that user's registered key, and bundles carry only wraps addressed to it. There are no
cookies and no CSRF tokens here (a bearer token is not sent by browsers on their own), and
answers are never cached. Errors are JSON: ``{"error": code, "message": text}``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, NotFound

from incidents import audit, crypto
from incidents.appstate import current_keyring, current_settings
from incidents.bundle import BundleError, b64, unb64
from incidents.db import db
from incidents.extensions import csrf
from incidents.models import Attachment, Report, User
from incidents.services import bundles, cases, desk_outputs, desk_proofs, organizer_keys
from incidents.services.api_tokens import ApiTokenError, authenticate
from incidents.services.desk_proofs import ProofError
from incidents.services.errors import DomainError, KeyUnavailableError
from incidents.uploads import attachment_directory

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)

KEY_HEADER = "X-Incidents-Key-Id"
MAX_PAGE = 200
VOLUNTEER_OUTPUTS_BYTES = 32 * 1024 * 1024
"""Volunteers send notes, replies and statuses (each sealed note at most 64 KiB)."""


def _error(status: int, code: str, message: str) -> Response:
    """A JSON error answer."""
    response = jsonify({"error": code, "message": message})
    response.status_code = status
    return response


@bp.errorhandler(ApiTokenError)
def _bad_token(error: ApiTokenError) -> ResponseReturnValue:
    """401 for a missing, unknown, expired or revoked token."""
    return _error(401, "token", str(error))


@bp.errorhandler(ProofError)
def _unproven(error: ProofError) -> ResponseReturnValue:
    """403 until the desk has proven it holds its key (the desk then answers a challenge)."""
    return _error(403, "proof", str(error))


@bp.errorhandler(bundles.DeskKeyError)
def _bad_key(error: bundles.DeskKeyError) -> ResponseReturnValue:
    """403 when the desk holds a key that is not the user's registered key."""
    return _error(403, "key", str(error))


@bp.errorhandler(KeyUnavailableError)
def _no_key(error: KeyUnavailableError) -> ResponseReturnValue:
    """503 while the organizer key is unusable."""
    current_app.logger.error("API closed (503): %s", error)
    return _error(503, "unavailable", "the server's organizer key is unavailable")


@bp.errorhandler(BundleError)
def _malformed(error: BundleError) -> ResponseReturnValue:
    """400 for malformed input."""
    return _error(400, "malformed", str(error))


@bp.errorhandler(DomainError)
def _refused(error: DomainError) -> ResponseReturnValue:
    """409 when a service refuses the request (the message says why)."""
    return _error(409, "refused", str(error))


@bp.errorhandler(HTTPException)
def _http(error: HTTPException) -> ResponseReturnValue:
    """HTTP errors as JSON."""
    return _error(error.code or 500, "http", error.name)


def token_required(view: Callable[..., ResponseReturnValue]) -> Callable[..., ResponseReturnValue]:
    """Authenticate the bearer token and the desk's key; set ``g.api_user`` and ``g.key_id``."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> ResponseReturnValue:
        header = request.headers.get("Authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret:
            raise ApiTokenError("An API token is required.")
        token, user = authenticate(secret.strip())
        keyring = current_keyring()
        g.api_user = user
        g.api_token = token
        g.key_id = bundles.check_desk_key(
            user, request.headers.get(KEY_HEADER, ""), keyring=keyring
        )
        return view(*args, **kwargs)

    return wrapped


def proof_required(
    view: Callable[..., ResponseReturnValue],
) -> Callable[..., ResponseReturnValue]:
    """Changes need a desk that proved it holds its key (a token alone is not enough)."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> ResponseReturnValue:
        desk_proofs.require_proven_token(g.api_token, key_id=g.key_id)
        return view(*args, **kwargs)

    return wrapped


@bp.post("/proof")
@token_required
def proof_challenge() -> ResponseReturnValue:
    """A possession challenge sealed to the desk's key."""
    public_key = desk_proofs.desk_public_key(_user(), g.key_id, keyring=current_keyring())
    blob = desk_proofs.issue_token_challenge(g.api_token, public_key)
    return jsonify({"challenge": b64(blob)})


@bp.post("/proof/answer")
@token_required
def proof_answer() -> ResponseReturnValue:
    """The desk's answer; a right one lets this token make changes for 30 minutes."""
    desk_proofs.answer_token_challenge(
        g.api_token, str(_json_body().get("answer", "")), key_id=g.key_id
    )
    return jsonify({"proven": True})


def _user() -> User:
    """The user the token belongs to."""
    user: User = g.api_user
    return user


def _audit(action: str, target: str, **details: str | int) -> None:
    """Record a bundle or attachment download in the audit log (committed)."""
    audit.record(actor=_user().username, action=action, target=target, details=details)
    db.session.commit()


def _json_body() -> dict[str, Any]:
    """The request's JSON object, or BundleError."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BundleError("expected a JSON object")
    return body


@bp.after_request
def _no_store(response: Response) -> Response:
    """API answers are never cached."""
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/session")
@token_required
def session() -> ResponseReturnValue:
    """Who the token belongs to, and the key ids that matter to the desk."""
    user = _user()
    keyring = current_keyring()
    return jsonify(
        {
            "username": user.username,
            "role": user.role,
            "key_id": g.key_id,
            "organizer_key_id": keyring.organizer.key_id_hex,
            "incoming_key_id": keyring.incoming.key_id_hex if keyring.incoming else None,
            "cases": bundles.count_visible(user),
        }
    )


@bp.get("/cases")
@token_required
def case_list() -> ResponseReturnValue:
    """A page of case bundles, in id order; ``after`` continues from the last id seen."""
    after_text = request.args.get("after", "")
    try:
        after = uuid.UUID(after_text) if after_text else None
        limit = min(max(1, int(request.args.get("limit", bundles.PAGE_SIZE))), MAX_PAGE)
    except ValueError as exc:
        raise BundleError("bad paging parameters") from exc
    page = bundles.bundle_page(
        _user(), key_id=g.key_id, keyring=current_keyring(), after=after, limit=limit
    )
    if after is None:
        _audit("bundle.sync", g.key_id, cases=bundles.count_visible(_user()))
    following = page[-1]["report_id"] if len(page) == limit else None
    return jsonify({"cases": page, "next": following})


@bp.get("/cases/<uuid:report_id>")
@token_required
def case(report_id: uuid.UUID) -> ResponseReturnValue:
    """One case bundle."""
    report = _visible(report_id)
    bundle = bundles.case_bundle(report, key_id=g.key_id, keyring=current_keyring())
    _audit("bundle.case", str(report_id), key_id=g.key_id)
    return jsonify(bundle)


def _visible(report_id: uuid.UUID) -> Report:
    """The report if the user may see it; otherwise a 404 (as if it did not exist)."""
    report = db.session.get(Report, report_id)
    if report is None or not bundles.can_see(_user(), report_id):
        raise NotFound()
    return report


@bp.get("/cases/<uuid:report_id>/attachments/<uuid:attachment_id>")
@token_required
def attachment(report_id: uuid.UUID, attachment_id: uuid.UUID) -> ResponseReturnValue:
    """The ciphertext of one attachment (the desk decrypts it)."""
    _visible(report_id)
    row = db.session.get(Attachment, attachment_id)
    if row is None or row.report_id != report_id:
        raise NotFound()
    path = attachment_directory(current_settings().instance_path) / row.id.hex
    _audit("attachment.download", str(report_id), key_id=g.key_id)
    return Response(path.read_bytes(), mimetype="application/octet-stream")


@bp.get("/volunteers")
@token_required
def volunteers() -> ResponseReturnValue:
    """Approved volunteer keys with fingerprints (organizers only)."""
    if _user().role != "organizer":
        return _error(403, "role", "organizers only")
    return jsonify({"volunteers": bundles.volunteer_directory()})


@bp.post("/outputs")
@token_required
@proof_required
def outputs() -> ResponseReturnValue:
    """Apply a batch of desk outputs (one transaction; safe to send again)."""
    settings = current_settings()
    # Only organizers send rotations, which carry re-encrypted attachments (base64).
    if _user().role == "organizer":
        request.max_content_length = 2 * settings.max_content_length
    else:
        request.max_content_length = VOLUNTEER_OUTPUTS_BYTES
    body = _json_body()
    summary = desk_outputs.apply_outputs(
        body, user=_user(), keyring=current_keyring(), instance_path=settings.instance_path
    )
    return jsonify(summary.to_dict())


@bp.post("/cases/<uuid:report_id>/revoke")
@token_required
@proof_required
def revoke(report_id: uuid.UUID) -> ResponseReturnValue:
    """Take a case back from a volunteer: their assignment and every wrap to their key go."""
    if _user().role != "organizer":
        return _error(403, "role", "organizers only")
    body = _json_body()
    try:
        volunteer_id = int(body["user_id"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError("user_id is required") from exc
    cases.unassign_report(report_id, volunteer_id=volunteer_id, organizer=_user())
    return jsonify({"revoked": True})


@bp.post("/organizer-key/challenge")
@token_required
def rotation_challenge() -> ResponseReturnValue:
    """Possession challenges for the current and the new organizer key."""
    body = _json_body()
    try:
        new_key = crypto.PublicKey.from_bytes(unb64(body.get("public_key")))
    except crypto.CryptoError as exc:
        raise BundleError("public_key is not a public key of the register") from exc
    challenge = organizer_keys.issue_challenge(
        new_key,
        keyring=current_keyring(),
        actor=_user(),
        pin_secret=current_settings().pin_key,
    )
    return jsonify({"current": b64(challenge.current), "new": b64(challenge.new)})


@bp.post("/organizer-key/start")
@token_required
def rotation_start() -> ResponseReturnValue:
    """Answer the challenges; the new key becomes the incoming organizer key."""
    body = _json_body()
    key_id = organizer_keys.start_rotation(
        {"current": str(body.get("current", "")), "new": str(body.get("new", ""))},
        keyring=current_keyring(),
        actor=_user(),
        pin_secret=current_settings().pin_key,
    )
    return jsonify({"incoming_key_id": key_id})


@bp.get("/organizer-key/pending")
@token_required
def rotation_pending() -> ResponseReturnValue:
    """A page of wraps that still need a wrap to the new key, and how many remain."""
    if _user().role != "organizer":
        return _error(403, "role", "organizers only")
    try:
        limit = min(max(1, int(request.args.get("limit", organizer_keys.PAGE_SIZE))), 1000)
    except ValueError as exc:
        raise BundleError("bad paging parameters") from exc
    page, remaining = organizer_keys.pending_wraps(current_keyring(), limit=limit)
    return jsonify({"wraps": page, "remaining": remaining})


def _wrap_list(limit: int = 1000) -> list[Any]:
    """The request's "wraps" list (at most ``limit`` items), or BundleError."""
    items = _json_body().get("wraps")
    if not isinstance(items, list) or len(items) > limit:
        raise BundleError(f"wraps must be a list of at most {limit} items")
    return items


@bp.post("/organizer-key/wraps")
@token_required
@proof_required
def rotation_wraps() -> ResponseReturnValue:
    """Store a batch of wraps to the new organizer key."""
    stored = organizer_keys.store_wraps(_wrap_list(), keyring=current_keyring(), actor=_user())
    return jsonify({"stored": stored})


@bp.post("/organizer-key/unreadable")
@token_required
@proof_required
def rotation_unreadable() -> ResponseReturnValue:
    """Discard old-key wraps of notes or replies that the old key cannot open."""
    discarded = organizer_keys.discard_unreadable(
        _wrap_list(), keyring=current_keyring(), actor=_user()
    )
    return jsonify({"discarded": discarded})


@bp.post("/organizer-key/finish")
@token_required
@proof_required
def rotation_finish() -> ResponseReturnValue:
    """Move the pin to the new key and delete the old key's wraps."""
    settings = current_settings()
    key_id = organizer_keys.finish_rotation(
        keyring=current_keyring(),
        actor=_user(),
        configured_pin=settings.organizer_key_id,
        pin_secret=settings.pin_key,
    )
    return jsonify({"organizer_key_id": key_id})
