"""The organizer's desk page for rotating the organizer key (the same steps as
``flask keys rotate``, with a progress page)."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _

from incidents import crypto
from incidents.desk import DeskStartError, read_key_file
from incidents.desk.client import DeskClientError, ServerClient
from incidents.desk.rotation import RotationRefusedError, rotate_organizer_key
from incidents.desk.session import DeskSession, Job
from incidents.desk.views import bp, client, organizer_only, private_key, state


@bp.route("/organizer-key", methods=["GET", "POST"])
def rotate_organizer_key_page() -> ResponseReturnValue:
    """Move every report to a new organizer key, then the server's pin."""
    key = private_key()
    organizer_only()
    if request.method == "GET":
        return render_template("desk/organizer_key.html", online=client() is not None)
    if client() is None:
        flash(_("Rotating the organizer key needs the server; this desk is offline."), "error")
        return redirect(url_for("desk.rotate_organizer_key_page"))
    try:
        text, _info = read_key_file(Path(request.form.get("new_key_path", "").strip()))
        new = crypto.decrypt_private_key(text, passphrase=request.form.get("passphrase", ""))
    except DeskStartError:
        flash(_("This file is not a private key of the incident register."), "error")
        return redirect(url_for("desk.rotate_organizer_key_page"))
    except crypto.CryptoError:
        flash(_("Wrong passphrase, or the key file was altered."), "error")
        return redirect(url_for("desk.rotate_organizer_key_page"))
    if new.key_id == key.key_id:
        flash(_("The new key is the current organizer key."), "error")
        return redirect(url_for("desk.rotate_organizer_key_page"))
    desk = state()
    job_id = uuid.uuid4().hex
    job = Job(total=0, kind="rotation")
    desk.jobs[job_id] = job
    threading.Thread(
        target=run_rotation, args=(desk, job, key, new), name="desk-rotation", daemon=True
    ).start()
    return redirect(url_for("desk.job", job_id=job_id))


def run_rotation(
    desk: DeskSession, job: Job, old: crypto.PrivateKey, new: crypto.PrivateKey
) -> None:
    """Run the rotation in the background, reporting progress into ``job``."""
    token = desk.token or ""

    def make_client(key_id: str) -> ServerClient:
        """A client presenting ``key_id``."""
        holder = old if key_id == old.key_id.hex() else new
        server = desk.settings.client(token=token, key_id=key_id, private_key=holder)
        if server is None:
            raise DeskClientError("this desk has no server address")
        return server

    def progress(done: int, total: int) -> None:
        """Record progress for the page."""
        job.total, job.done = max(total, 1), done

    try:
        result = rotate_organizer_key(make_client, old=old, new=new, progress=progress)
    except (DeskClientError, RotationRefusedError, crypto.CryptoError) as exc:
        job.message = str(exc)
    else:
        job.done = job.total = max(job.total, result.rewrapped, 1)
        job.result = result.organizer_key_id
    job.finished = True
