"""The desk's pages: unlock, case list, case view, notes, replies, status, grants, sync.

Decrypted content is rendered into responses only (``Cache-Control: no-store``); flashed
messages carry fixed texts and counts, never case content, because they travel in a cookie.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_babel import ngettext
from werkzeug.exceptions import HTTPException

from incidents import crypto, vocabulary
from incidents.bundle import BundleError, unb64
from incidents.desk import sync as sync_module
from incidents.desk import work
from incidents.desk.client import DeskClientError, NetworkError, ServerClient, ServerError
from incidents.desk.session import TOKEN_META, DeskSession, Job
from incidents.desk.sync import (
    clear_exported,
    export_outputs,
    import_bundle_file,
    push,
    sync,
    volunteers,
)
from incidents.services.casefile import open_bundle
from incidents.services.desk_outputs import VOLUNTEER_TRANSITIONS
from incidents.services.errors import NoWrapForKeyError
from incidents.services.triage import TRANSITIONS
from incidents.workcopy import IMAGE_FORMATS, WorkingCopyError, strip_image

bp = Blueprint("desk", __name__)

COOKIE = "desk_key"
CONFIRMED_META = "confirmed_keys"
MAX_TEXT_BYTES = 48 * 1024
PUBLIC_ENDPOINTS = frozenset({"desk.unlock", "static"})


def state() -> DeskSession:
    """The running desk's state."""
    desk: DeskSession = current_app.extensions["incidents.desk"]
    return desk


def private_key() -> crypto.PrivateKey:
    """The unlocked key for this request (the before-request hook guarantees it)."""
    key = state().key_for(request.cookies.get(COOKIE))
    if key is None:
        abort(403)
    return key


@bp.before_app_request
def guard() -> ResponseReturnValue | None:
    """Refuse other hosts (DNS rebinding) and send locked or foreign browsers to unlock."""
    host = (request.host or "").rsplit(":", 1)[0].strip("[]")
    from incidents.desk import is_loopback

    if not is_loopback(host):
        abort(400)
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if state().key_for(request.cookies.get(COOKIE)) is None:
        if request.method == "POST":
            flash(_("The desk is locked. Unlock it to continue."), "error")
        return redirect(url_for("desk.unlock"))
    return None


@bp.app_errorhandler(400)
@bp.app_errorhandler(403)
@bp.app_errorhandler(404)
@bp.app_errorhandler(405)
@bp.app_errorhandler(413)
@bp.app_errorhandler(500)
def error_page(error: HTTPException) -> ResponseReturnValue:
    """A desk page for HTTP errors (never with case content)."""
    code = error.code or 500
    return render_template("desk/error.html", code=code), code


@bp.app_context_processor
def inject_desk() -> dict[str, Any]:
    """Values every desk page needs."""
    desk = state()
    return {
        "role": desk.cache.get_meta("role") or "",
        "vocabulary": vocabulary,
        "image_formats": IMAGE_FORMATS,
        "desk_key_id": desk.key_id,
        "desk_online": bool(desk.settings.server_url),
        "desk_unlocked": desk.key_for(request.cookies.get(COOKIE)) is not None
        if request
        else False,
    }


def cookie_path() -> str:
    """The desk's own path: cookies set for it are not sent to other programs on this computer
    (browsers send a host's cookies to every port, but only under the cookie's path)."""
    return (request.script_root or "") + "/"


def client() -> ServerClient | None:
    """A server client with the unlocked token, or None (offline desk, or no token)."""
    desk = state()
    if not desk.token:
        return None
    return desk.settings.client(token=desk.token, key_id=desk.key_id, private_key=desk.private_key)


def explain(error: DeskClientError) -> str:
    """One clear, translated sentence for a failed server call."""
    if isinstance(error, NetworkError):
        return str(_("The server could not be reached. Nothing was lost; try again later."))
    if not isinstance(error, ServerError):
        return str(_("The server answered with an error."))
    if error.code == "token":
        state().forget_token()
        return str(
            _(
                "The server refused the API token (expired, revoked or mistyped). "
                "Make a new one on your account page and unlock the desk with it."
            )
        )
    if error.code == "key":
        return str(
            _(
                "This key is not registered on the server for your account. "
                "Check that you started the desk with your own key file."
            )
        )
    if error.code == "proof":
        return str(
            _("The server did not accept this desk's proof that it holds your key. Try again.")
        )
    if error.code == "refused":
        return str(_("The server refused the change: %(reason)s", reason=str(error)))
    return str(_("The server answered with an error (%(status)s).", status=error.status))


# --------------------------------------------------------------------------- unlock and lock


@bp.route("/unlock", methods=["GET", "POST"])
def unlock() -> ResponseReturnValue:
    """Ask for the passphrase (and, the first time, the API token)."""
    desk = state()
    if request.method == "GET":
        return render_template(
            "desk/unlock.html", has_saved=desk.cache.get_meta(TOKEN_META) is not None
        )
    passphrase = request.form.get("passphrase", "")
    token = request.form.get("token", "").strip()
    try:
        cookie = desk.unlock(passphrase, token=token)
    except crypto.WrongPassphraseError:
        flash(_("Wrong passphrase, or the key file was altered."), "error")
        return render_template("desk/unlock.html", has_saved=False), 400
    except crypto.CryptoError:
        flash(_("This file is not a private key of the incident register."), "error")
        return render_template("desk/unlock.html", has_saved=False), 400
    response = redirect(url_for("desk.index"))
    response.set_cookie(COOKIE, cookie, httponly=True, samesite="Strict", path=cookie_path())
    problem = check_server()
    if problem:
        flash(problem, "error")
    return response


def check_server() -> str | None:
    """After unlocking: check the token and that the server knows this key (if online)."""
    server = client()
    if server is None:
        return None
    try:
        server.session()
    except NetworkError:
        return str(_("The server could not be reached; you can work with the cases already here."))
    except ServerError as exc:
        message = explain(exc)
        if exc.code == "key":
            state().lock_now()
        return message
    return None


@bp.post("/lock")
def lock() -> ResponseReturnValue:
    """Lock the desk now."""
    state().lock_now()
    response = redirect(url_for("desk.unlock"))
    response.delete_cookie(COOKIE, path=cookie_path())
    return response


# --------------------------------------------------------------------------- case list and sync


@bp.get("/")
def index() -> ResponseReturnValue:
    """Cached cases (shell only), outbox size, sync and file exchange."""
    private_key()
    desk = state()
    return render_template(
        "desk/index.html",
        organizer_change=organizer_change(),
        cases=desk.cache.cases(),
        pending=desk.cache.pending_count(),
        has_token=bool(desk.token),
        role=desk.cache.get_meta("role") or "",
        synced_on=desk.cache.get_meta("synced_on") or "",
    )


def organizer_change() -> dict[str, str] | None:
    """The organizer key the server now lists, when it is not the one this desk pinned."""
    change = sync_module.organizer_key_change(state().cache)
    if change is None or (state().cache.get_meta("role") or "") == "organizer":
        return None
    pinned, seen = change
    fingerprint = ""
    for bundle in state().cache.cases():
        for entry in bundle["recipients"]:
            if entry["key_id"] == seen:
                fingerprint = entry["fingerprint"]
    return {"pinned": pinned, "seen": seen, "fingerprint": fingerprint}


@bp.post("/organizer-key/accept")
def accept_organizer_key() -> ResponseReturnValue:
    """Trust the organizer key the server lists now (after comparing its fingerprint)."""
    private_key()
    sync_module.accept_organizer_key(state().cache)
    flash(_("The new organizer key is now trusted on this desk."))
    return redirect(url_for("desk.index"))


@bp.post("/sync")
def sync_now() -> ResponseReturnValue:
    """Send the outbox and fetch every case."""
    private_key()
    server = client()
    if server is None:
        flash(_("This desk has no server or no API token; use bundle files instead."), "error")
        return redirect(url_for("desk.index"))
    try:
        result = sync(state().cache, server)
    except DeskClientError as exc:
        flash(explain(exc), "error")
        return redirect(url_for("desk.index"))
    state().cache.set_meta("synced_on", date.today().isoformat())
    flash(
        _("Synced.")
        + " "
        + ngettext("%(num)s change sent.", "%(num)s changes sent.", result.sent)
        + " "
        + ngettext("%(num)s case on this desk.", "%(num)s cases on this desk.", result.cases)
    )
    if result.refused:
        flash_refused(result.refused)
    return redirect(url_for("desk.index"))


def flash_refused(count: int) -> None:
    """Say that the server refused some changes (they were dropped from the list)."""
    flash(
        ngettext(
            "The server refused %(num)s change (the case had changed meanwhile); it was "
            "removed from the list. Open the case again and redo it if it is still needed.",
            "The server refused %(num)s changes (the cases had changed meanwhile); they were "
            "removed from the list. Open the cases again and redo them if still needed.",
            count,
        ),
        "error",
    )


@bp.post("/import")
def import_bundle() -> ResponseReturnValue:
    """Load a bundle file downloaded from the server (air-gapped use)."""
    private_key()
    upload = request.files.get("bundle")
    data = upload.read() if upload else b""
    try:
        count = import_bundle_file(state().cache, data)
    except BundleError:
        flash(
            _("This is not a case bundle for your key, or it was altered. Nothing was changed."),
            "error",
        )
        return redirect(url_for("desk.index"))
    flash(_("Bundle loaded: %(count)s cases.", count=count))
    return redirect(url_for("desk.index"))


@bp.get("/outputs")
def download_outputs() -> ResponseReturnValue:
    """The outbox as an outputs file (upload it on the server's Desk page)."""
    key = private_key()
    data = export_outputs(state().cache, private_key=key)
    name = f"desk-outputs-{date.today().isoformat()}.json"
    return Response(
        data,
        mimetype="application/json",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@bp.post("/outputs/clear")
def clear_outputs() -> ResponseReturnValue:
    """Forget the outbox after its file was uploaded on the server."""
    private_key()
    count = clear_exported(state().cache)
    flash(
        ngettext(
            "%(num)s change from the downloaded file was removed from the list.",
            "%(num)s changes from the downloaded file were removed from the list.",
            count,
        )
    )
    return redirect(url_for("desk.index"))


# --------------------------------------------------------------------------- one case


def bundle_or_404(report_id: uuid.UUID) -> dict[str, Any]:
    """The cached bundle of a case, or 404."""
    bundle = state().cache.case(str(report_id))
    if bundle is None:
        abort(404)
    return bundle


def confirmed_keys() -> set[str]:
    """Volunteer key ids whose fingerprint the organizer confirmed on this desk."""
    raw = state().cache.get_meta(CONFIRMED_META)
    return set(json.loads(raw)) if raw else set()


def confirm_key(key_id: str) -> None:
    """Remember that the organizer compared this key's fingerprint."""
    keys = confirmed_keys() | {key_id}
    state().cache.set_meta(CONFIRMED_META, json.dumps(sorted(keys)))


@bp.get("/cases/<uuid:report_id>")
def case(report_id: uuid.UUID) -> ResponseReturnValue:
    """Every decrypted field, the shell, status history, additions, replies and notes."""
    key = private_key()
    bundle = bundle_or_404(report_id)
    opened = None
    problem = None
    try:
        opened = open_bundle(bundle, private_key=key)
    except NoWrapForKeyError:
        problem = _("This case has not been granted to your key yet.")
    except (crypto.CryptoError, BundleError):
        problem = _("This case could not be opened: it was altered or is not for your key.")
    role = state().cache.get_meta("role") or ""
    table = TRANSITIONS if role == "organizer" else VOLUNTEER_TRANSITIONS
    status = bundle["shell"]["status"]
    assigned = [entry for entry in bundle["recipients"] if entry["role"] == "volunteer"]
    return render_template(
        "desk/case.html",
        bundle=bundle,
        case=opened,
        problem=problem,
        role=role,
        allowed_statuses=sorted(table.get(status, frozenset())),
        assigned=assigned,
        confirmed=confirmed_keys(),
        online=client() is not None,
    )


def queue(kind: str, item: dict[str, Any]) -> None:
    """Put an output in the outbox and try to send it at once (if online)."""
    desk = state()
    desk.cache.add_output(kind, item)
    server = client()
    if server is None:
        flash(_("Saved on this desk; it will be sent with the next sync or outputs file."))
        return
    try:
        pushed = push(desk.cache, server)
        sync_module.store_case(desk.cache, server.case(item["report_id"]))
    except DeskClientError as exc:
        flash(explain(exc), "error")
        flash(_("Saved on this desk; it will be sent with the next sync or outputs file."))
        return
    if pushed.refused:
        flash_refused(pushed.refused)
    else:
        flash(_("Sent to the server."))


def trusted(entry: Mapping[str, str]) -> bool:
    """Whether this desk seals to a recipient the server listed for a case.

    The server could list a key of its own; so an organizer's desk seals only to its own key
    and to volunteer keys whose fingerprint the organizer confirmed here, and a volunteer's
    desk only to the organizer key it saw first (changed only when the volunteer accepts a new
    one) and to the volunteers the server lists (which a volunteer cannot check).
    """
    desk = state()
    role = desk.cache.get_meta("role") or ""
    if entry["role"] == "organizer":
        if role == "organizer":
            return entry["key_id"] == desk.key_id
        return entry["key_id"] == desk.cache.get_meta(sync_module.ORGANIZER_PIN_META)
    if role == "organizer":
        return entry["key_id"] in confirmed_keys()
    return True


def seal_for_case(kind: str, seal: Callable[[work.Trust], dict[str, Any]]) -> None:
    """Seal an output to the trusted recipients and queue it; explain a refusal."""
    try:
        item = seal(trusted)
    except BundleError:
        flash(
            _(
                "The organizer key listed by the server is not the one this desk knows. "
                "Nothing was sent. Compare the fingerprint with your organizer first."
            ),
            "error",
        )
        return
    queue(kind, item)


def text_field(name: str) -> str:
    """A text field of the form, trimmed; 400 if it is too long to seal (the server accepts
    sealed notes and replies up to 64 KiB)."""
    text = request.form.get(name, "").strip()
    if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
        abort(400)
    return text


SEALERS: dict[str, Callable[..., dict[str, Any]]] = {
    "notes": work.seal_note,
    "replies": work.seal_reply,
}


def seal_text(report_id: uuid.UUID, kind: str, *, empty_message: str) -> ResponseReturnValue:
    """Seal the form's text as a note or a reply to the case and queue it."""
    private_key()
    bundle = bundle_or_404(report_id)
    text = text_field("text")
    if not text:
        flash(empty_message, "error")
    else:
        seal = SEALERS[kind]
        seal_for_case(kind, lambda trust: seal(bundle, text, trusted=trust))
    return redirect(url_for("desk.case", report_id=report_id))


@bp.post("/cases/<uuid:report_id>/notes")
def add_note(report_id: uuid.UUID) -> ResponseReturnValue:
    """Seal a note to the organizer and the assigned volunteers."""
    return seal_text(report_id, "notes", empty_message=_("Write the note first."))


@bp.post("/cases/<uuid:report_id>/replies")
def add_reply(report_id: uuid.UUID) -> ResponseReturnValue:
    """Seal a reply to the witness (and the organizer and assigned volunteers)."""
    return seal_text(report_id, "replies", empty_message=_("Write the reply first."))


@bp.post("/cases/<uuid:report_id>/status")
def change_status(report_id: uuid.UUID) -> ResponseReturnValue:
    """Queue a status change."""
    private_key()
    bundle = bundle_or_404(report_id)
    new_status = request.form.get("status", "")
    if new_status not in vocabulary.STATUS_CODES:
        flash(_("Unknown status."), "error")
    else:
        queue(
            "statuses",
            work.status_change(bundle, new_status, reason=text_field("reason")[:500]),
        )
    return redirect(url_for("desk.case", report_id=report_id))


@bp.get("/cases/<uuid:report_id>/attachments/<uuid:attachment_id>")
def attachment(report_id: uuid.UUID, attachment_id: uuid.UUID) -> ResponseReturnValue:
    """Fetch an attachment's ciphertext, decrypt it in memory and hand it to the browser."""
    key = private_key()
    bundle = bundle_or_404(report_id)
    server = client()
    if server is None:
        flash(_("Attachments are fetched from the server; this desk is offline."), "error")
        return redirect(url_for("desk.case", report_id=report_id))
    try:
        ciphertext = server.attachment(str(report_id), str(attachment_id))
        meta, data = work.open_attachment(bundle, str(attachment_id), ciphertext, private_key=key)
    except DeskClientError as exc:
        flash(explain(exc), "error")
        return redirect(url_for("desk.case", report_id=report_id))
    except (crypto.CryptoError, BundleError):
        flash(_("The file could not be opened: it was altered or is not for your key."), "error")
        return redirect(url_for("desk.case", report_id=report_id))
    safe_name = "".join(ch for ch in meta.name if ch.isalnum() or ch in "._- ") or "file"
    if request.args.get("copy") == "working":
        try:
            data = strip_image(data, media_type=meta.type).data
        except WorkingCopyError:
            flash(_("No working copy can be made of this kind of file."), "error")
            return redirect(url_for("desk.case", report_id=report_id))
        stem = safe_name.rsplit(".", 1)[0] if "." in safe_name else safe_name
        extension = IMAGE_FORMATS[meta.type].lower().replace("jpeg", "jpg")
        safe_name = f"working-copy-{stem}.{extension}"
    return Response(
        data,
        mimetype="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{safe_name}"'},
    )


# --------------------------------------------------------------------------- organizer: grants


def volunteer_by_key(key_id: str) -> dict[str, str] | None:
    """The approved volunteer key with this id, from the last sync or bundle."""
    for entry in volunteers(state().cache):
        if entry["key_id"] == key_id:
            return entry
    return None


def organizer_only() -> None:
    """404 for volunteers' desks."""
    if (state().cache.get_meta("role") or "") != "organizer":
        abort(404)


def volunteer_key_from_form() -> tuple[dict[str, str], crypto.PublicKey] | None:
    """The volunteer chosen in the form, after the fingerprint check; flashes what is missing."""
    entry = volunteer_by_key(request.form.get("key_id", ""))
    if entry is None:
        flash(_("Choose a volunteer with an approved key."), "error")
        return None
    if entry["key_id"] not in confirmed_keys():
        if request.form.get("fingerprint_checked") != "yes":
            flash(
                _("Compare the key's fingerprint with the volunteer first, then tick the box."),
                "error",
            )
            return None
        confirm_key(entry["key_id"])
    public_key = crypto.PublicKey.from_bytes(unb64(entry["public_key"]))
    if public_key.key_id_hex != entry["key_id"] or public_key.fingerprint != entry["fingerprint"]:
        flash(_("The volunteer's key does not match its fingerprint."), "error")
        return None
    return entry, public_key


@bp.post("/cases/<uuid:report_id>/grant")
def grant(report_id: uuid.UUID) -> ResponseReturnValue:
    """Wrap this case's keys to an assigned volunteer's key and send the wraps."""
    key = private_key()
    organizer_only()
    bundle = bundle_or_404(report_id)
    chosen = volunteer_key_from_form()
    if chosen is not None:
        try:
            queue("grants", work.grant_case(bundle, chosen[1], private_key=key))
        except (crypto.CryptoError, NoWrapForKeyError):
            flash(_("This case could not be opened with your key."), "error")
    return redirect(url_for("desk.case", report_id=report_id))


@bp.post("/cases/<uuid:report_id>/revoke")
def revoke(report_id: uuid.UUID) -> ResponseReturnValue:
    """Take the case back from a volunteer; with "rotate", re-seal it under new keys."""
    key = private_key()
    organizer_only()
    bundle_or_404(report_id)
    server = client()
    if server is None:
        flash(_("Revoking needs the server; this desk is offline."), "error")
        return redirect(url_for("desk.case", report_id=report_id))
    user_id = request.form.get("user_id", "").strip()
    rotate = request.form.get("rotate") == "yes"
    try:
        if user_id:
            server.revoke(str(report_id), user_id=int(user_id))
        fresh = server.case(str(report_id))
        if rotate:
            item = work.rotate_case(
                fresh,
                private_key=key,
                trusted=trusted,
                fetch_attachment=lambda attachment_id: server.attachment(
                    str(report_id), attachment_id
                ),
            )
            server.send_outputs({"key_id": state().key_id, "rotations": [item]})
            fresh = server.case(str(report_id))
        sync_module.store_case(state().cache, fresh)
    except ValueError:
        abort(400)
    except DeskClientError as exc:
        flash(explain(exc), "error")
        return redirect(url_for("desk.case", report_id=report_id))
    except (crypto.CryptoError, BundleError, NoWrapForKeyError):
        flash(
            _(
                "The case's keys could not be rotated: part of what the witness sent does not "
                "open with your key. Nothing was changed by the rotation."
            ),
            "error",
        )
        return redirect(url_for("desk.case", report_id=report_id))
    if rotate:
        flash(_("Done. The case is sealed under new keys that only its remaining readers hold."))
    else:
        flash(_("Access revoked."))
    return redirect(url_for("desk.case", report_id=report_id))


@bp.route("/grants", methods=["GET", "POST"])
def bulk_grant() -> ResponseReturnValue:
    """Grant many cases to one volunteer at once, with a progress bar."""
    key = private_key()
    organizer_only()
    desk = state()
    cases = desk.cache.cases()
    if request.method == "GET":
        return render_template(
            "desk/grants.html",
            cases=cases,
            volunteers=volunteers(desk.cache),
            confirmed=confirmed_keys(),
        )
    chosen = volunteer_key_from_form()
    selected = set(request.form.getlist("report_id"))
    if chosen is None or not selected:
        if chosen is not None:
            flash(_("Choose at least one case."), "error")
        return redirect(url_for("desk.bulk_grant"))
    bundles = [bundle for bundle in cases if bundle["report_id"] in selected]
    job_id = uuid.uuid4().hex
    job = Job(total=len(bundles))
    desk.jobs[job_id] = job
    thread = threading.Thread(
        target=run_bulk_grant,
        args=(desk, job, bundles, chosen[1], key),
        daemon=True,
    )
    thread.start()
    return redirect(url_for("desk.job", job_id=job_id))


GRANT_BATCH = 25


def run_bulk_grant(
    desk: DeskSession,
    job: Job,
    bundles: list[dict[str, Any]],
    volunteer: crypto.PublicKey,
    key: crypto.PrivateKey,
) -> None:
    """Wrap each case to the volunteer and send the grants in batches (background thread)."""
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        """Queue the batch and send it if the desk is online."""
        for item in batch:
            desk.cache.add_output("grants", item)
        batch.clear()
        server = (
            desk.settings.client(token=desk.token, key_id=desk.key_id, private_key=key)
            if desk.token
            else None
        )
        if server is not None:
            try:
                job.refused += push(desk.cache, server).refused
            except DeskClientError as exc:
                job.message = f"{type(exc).__name__}: {exc}"

    for bundle in bundles:
        try:
            batch.append(work.grant_case(bundle, volunteer, private_key=key))
        except (crypto.CryptoError, NoWrapForKeyError, BundleError):
            job.failed += 1
        job.done += 1
        if len(batch) >= GRANT_BATCH:
            flush()
    flush()
    job.finished = True


@bp.get("/jobs/<job_id>")
def job(job_id: str) -> ResponseReturnValue:
    """Progress of a bulk grant or a key rotation (refreshes itself without JavaScript)."""
    private_key()
    current = state().jobs.get(job_id)
    if current is None:
        abort(404)
    return render_template("desk/job.html", job=current, job_id=job_id)
