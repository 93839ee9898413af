"""Command-line tools: ``flask --app app keys ...``, ``reports ...`` and ``demo ...``.

Every expected failure (wrong passphrase, tampered ciphertext, missing file, unknown report)
ends with one clear message and a non-zero exit status, never a traceback. Passphrases are
asked for on the terminal (twice when creating a key) or read from ``INCIDENTS_KEY_PASSPHRASE``
for automation; they are never echoed or logged.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
from flask import Flask
from flask.cli import AppGroup

from incidents import crypto
from incidents.appstate import current_keyring, current_settings
from incidents.config import DEMO_KEY_ID, DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY
from incidents.services import reports
from incidents.services.errors import DomainError

PASSPHRASE_VARIABLE = "INCIDENTS_KEY_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
MIN_PASSPHRASE_LENGTH = 12

P = ParamSpec("P")
R = TypeVar("R")

keys_cli = AppGroup("keys", help="Create, inspect, back up and restore recipient keys.")
reports_cli = AppGroup("reports", help="List and open stored reports (organizer tools).")
users_cli = AppGroup("users", help="Create the first organizer account.")
export_cli = AppGroup("export", help="Anonymized exports (charged to the privacy budget).")
audit_cli = AppGroup("audit", help="Check the tamper-evident audit log.")
demo_cli = AppGroup("demo", help="Prepare a local demonstration installation.")


def register_commands(app: Flask) -> None:
    """Attach the command groups to ``app``."""
    app.cli.add_command(keys_cli)
    app.cli.add_command(reports_cli)
    app.cli.add_command(demo_cli)
    app.cli.add_command(users_cli)
    app.cli.add_command(audit_cli)
    app.cli.add_command(export_cli)
    app.cli.add_command(desk_command)


def clear_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn expected failures into one-line messages instead of tracebacks."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        """Run the command, turning the expected failures into ClickException."""
        try:
            return command(*args, **kwargs)
        except crypto.WrongPassphraseError as exc:
            raise click.ClickException(
                "wrong passphrase (or the key file was altered); nothing was changed"
            ) from exc
        except crypto.DecryptionError as exc:
            raise click.ClickException(
                f"decryption failed: {exc}. The ciphertext was altered or moved, "
                "or this is not the right key"
            ) from exc
        except crypto.CryptoError as exc:
            raise click.ClickException(str(exc)) from exc
        except DomainError as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:
            raise click.ClickException(f"{exc.strerror or exc}: {exc.filename or ''}") from exc

    return wrapper


def new_passphrase() -> str:
    """Ask for a new passphrase twice (or read the environment); enforce a minimum length."""
    passphrase = os.environ.get(PASSPHRASE_VARIABLE)
    if passphrase is None:
        passphrase = click.prompt(
            "New passphrase for the key file",
            hide_input=True,
            confirmation_prompt="Repeat the passphrase",
            err=True,  # prompts on stderr, so that stdout stays clean for redirection
        )
    if len(passphrase) < MIN_PASSPHRASE_LENGTH:
        raise click.ClickException(
            f"the passphrase must have at least {MIN_PASSPHRASE_LENGTH} characters; "
            "a few random words are easier to remember and stronger"
        )
    return passphrase


def existing_passphrase(prompt: str = "Passphrase of the key file") -> str:
    """Ask once for the passphrase of an existing key file (or read the environment)."""
    passphrase = os.environ.get(PASSPHRASE_VARIABLE)
    if passphrase is None:
        passphrase = click.prompt(prompt, hide_input=True, err=True)
    return passphrase


def read_private_key(
    path: Path, *, prompt: str = "Passphrase of the key file"
) -> crypto.PrivateKey:
    """Open a private key file with a passphrase; crypto errors propagate to ``clear_errors``."""
    text = _read_text(path, what="private key file")
    crypto.inspect_private_key_file(text)  # a clear FormatError before asking for a passphrase
    return crypto.decrypt_private_key(text, passphrase=existing_passphrase(prompt))


def read_public_key(path: Path) -> crypto.PublicKey:
    """Read an armored public key file."""
    return crypto.PublicKey.from_armor(_read_text(path, what="public key file"))


def _read_text(path: Path, *, what: str) -> str:
    """Read an ASCII key file; a missing or binary file becomes a one-line error."""
    try:
        return path.read_text(encoding="ascii")
    except FileNotFoundError as exc:
        raise click.ClickException(f"{what} {path} does not exist") from exc
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{path} is not a {what}") from exc


def write_new_file(path: Path, text: str, *, mode: int) -> None:
    """Write a file that must not exist yet, with the given permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as exc:
        raise click.ClickException(f"{path} already exists; refusing to overwrite it") from exc
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text)


def write_new_file_bytes(path: Path, data: bytes, *, mode: int) -> None:
    """Write binary data to a file that must not exist yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as exc:
        raise click.ClickException(f"{path} already exists; refusing to overwrite it") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def write_key_pair(
    private_key: crypto.PrivateKey,
    *,
    out: Path,
    public_out: Path | None,
    passphrase: str,
    kdf: crypto.KdfParams = crypto.DEFAULT_KDF,
) -> crypto.PublicKey:
    """Write the encrypted private key file (0600) and, if asked, the public key file."""
    for target in (out, public_out):
        if target is not None and target.exists():
            raise click.ClickException(f"{target} already exists; refusing to overwrite it")
    public_key = private_key.public_key()
    write_new_file(
        out, crypto.encrypt_private_key(private_key, passphrase=passphrase, kdf=kdf), mode=0o600
    )
    if public_out is not None:
        write_new_file(public_out, public_key.to_armor(), mode=0o644)
    return public_key


def echo_key(public_key: crypto.PublicKey) -> None:
    """Print suite, key id and fingerprint of a key."""
    click.echo(f"Suite:       {public_key.suite_name}")
    click.echo(f"Key id:      {public_key.key_id_hex}")
    click.echo(f"Fingerprint: {public_key.fingerprint}")


# --------------------------------------------------------------------------- keys


@keys_cli.command("init")
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    required=True,
    help="Where to write the passphrase-protected private key file.",
)
@click.option(
    "--public-out",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write the public key (e.g. keys/organizer.pub).",
)
@clear_errors
def keys_init(out: Path, public_out: Path | None) -> None:
    """Create a new key pair; run this on the organizer's own (ideally offline) machine."""
    passphrase = new_passphrase()
    click.echo("Deriving the file key with Argon2id (256 MiB, a second or two)...", err=True)
    public_key = write_key_pair(
        crypto.PrivateKey.generate(), out=out, public_out=public_out, passphrase=passphrase
    )
    click.echo(f"Private key file: {out} (keep it off the server; back it up with 'keys backup')")
    if public_out is not None:
        click.echo(f"Public key file:  {public_out}")
    echo_key(public_key)
    click.echo(
        "Pin this key on the server with INCIDENTS_ORGANIZER_KEY_ID="
        f"{public_key.key_id_hex} after comparing the fingerprint."
    )


@keys_cli.command("show")
@click.option(
    "--public",
    "public_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Public key file (default: the configured organizer key).",
)
@clear_errors
def keys_show(public_path: Path | None) -> None:
    """Print the key id and fingerprint of a public key."""
    settings = current_settings()
    path = public_path or settings.organizer_public_key_path
    public_key = read_public_key(path)
    click.echo(f"File:        {path}")
    echo_key(public_key)
    if public_path is None:
        pinned = settings.organizer_key_id
        if pinned and crypto.parse_key_id(pinned) == public_key.key_id:
            click.echo("Pinned:      yes (INCIDENTS_ORGANIZER_KEY_ID matches)")
        else:
            click.echo("Pinned:      NO (INCIDENTS_ORGANIZER_KEY_ID is unset or different)")


@keys_cli.command("backup")
@click.option("--key", "key_path", type=click.Path(path_type=Path), required=True)
@clear_errors
def keys_backup(key_path: Path) -> None:
    """Print a 3-of-5 SLIP-39 word-share backup of a private key, for paper."""
    private_key = read_private_key(key_path)
    shares = crypto.split_seed(private_key, threshold=3, shares=5)
    click.echo(f"Backup of key {private_key.key_id.hex()} ({private_key.public_key().suite_name})")
    click.echo("Any 3 of these 5 shares rebuild the key; fewer reveal nothing about it.")
    click.echo("Write each share on paper and give them to 5 different trusted people or places.")
    click.echo("")
    for number, share in enumerate(shares, start=1):
        click.echo(f"Share {number} of 5:")
        click.echo(f"  {share}")
        click.echo("")


@keys_cli.command("restore")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True)
@click.option("--public-out", type=click.Path(path_type=Path), default=None)
@click.option("--suite", type=click.Choice(["xwing", "x25519"]), default="xwing", show_default=True)
@clear_errors
def keys_restore(out: Path, public_out: Path | None, suite: str) -> None:
    """Rebuild a private key file from 3 of its 5 word shares (one share per line)."""
    shares: list[str] = []
    interactive = sys.stdin.isatty()
    while len(shares) < 3:
        if interactive:
            line = click.prompt(f"Share {len(shares) + 1}", hide_input=True)
        else:
            line = sys.stdin.readline()
            if not line:
                break
        if line.strip():
            shares.append(line.strip())
    if len(shares) < 3:
        raise click.ClickException("3 shares are needed to restore a key")
    suite_byte = crypto.SUITE_XWING if suite == "xwing" else crypto.SUITE_X25519
    private_key = crypto.combine_seed(shares, suite=suite_byte)
    public_key = write_key_pair(
        private_key, out=out, public_out=public_out, passphrase=new_passphrase()
    )
    click.echo(f"Restored private key file: {out}")
    echo_key(public_key)


# --------------------------------------------------------------------------- reports


@reports_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (ids and shell fields).")
def reports_list(as_json: bool) -> None:
    """List stored reports with their clear shell fields, newest received first."""
    shells = reports.list_report_shells()
    if as_json:
        click.echo(json.dumps([shell.to_dict() for shell in shells], indent=2))
        return
    for shell in shells:
        click.echo(
            f"{shell.id}  {shell.received_on}  {shell.status:<8} {shell.category:<20} "
            f"{shell.occurred_period:<8} {shell.country}/{shell.city}"
        )
    click.echo(f"{len(shells)} report(s)", err=True)


@reports_cli.command("open")
@click.argument("report_id")
@click.option("--key", "key_path", type=click.Path(path_type=Path), required=True)
@clear_errors
def reports_open(report_id: str, key_path: Path) -> None:
    """Decrypt one report (with additions, attachment list and replies) and print it as JSON."""
    from incidents.services import casefile

    parsed_id = _parse_report_id(report_id)
    private_key = read_private_key(key_path)
    opened = casefile.open_case(parsed_id, private_key=private_key)
    click.echo(json.dumps(opened.to_dict(), indent=2, ensure_ascii=False))


@reports_cli.command("attachment")
@click.argument("report_id")
@click.argument("number", type=int)
@click.option("--key", "key_path", type=click.Path(path_type=Path), required=True)
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    required=True,
    help="Where to write the original file (its SHA-256 is verified first).",
)
@click.option(
    "--working-copy",
    "working_copy",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write a copy with EXIF/XMP/GPS and other metadata removed (images).",
)
@clear_errors
def reports_attachment(
    report_id: str, number: int, key_path: Path, out: Path, working_copy: Path | None
) -> None:
    """Save attachment NUMBER of a report: the verified original, and a clean working copy."""
    from incidents.services import casefile
    from incidents.services.attachments import AttachmentError
    from incidents.workcopy import IMAGE_FORMATS, WorkingCopyError, strip_image

    parsed_id = _parse_report_id(report_id)
    private_key = read_private_key(key_path)
    try:
        meta, data = casefile.open_attachment_bytes(
            parsed_id,
            number,
            private_key=private_key,
            instance_path=current_settings().instance_path,
        )
    except AttachmentError as exc:
        raise click.ClickException(f"{exc}; nothing was written") from exc
    if working_copy is not None and meta.type not in IMAGE_FORMATS:
        raise click.ClickException(
            f"no working copy can be made of {meta.type} files (see docs/evidence.md); "
            "nothing was written"
        )
    write_new_file_bytes(out, data, mode=0o600)
    click.echo(f"Original: {out} ({meta.name}, {meta.type}, {meta.size} bytes)")
    click.echo(f"SHA-256:  {meta.sha256} (matches the hash sealed at intake)")
    if working_copy is not None:
        try:
            copy = strip_image(data, media_type=meta.type)
        except WorkingCopyError as exc:
            raise click.ClickException(str(exc)) from exc
        write_new_file_bytes(working_copy, copy.data, mode=0o600)
        click.echo(f"Working copy without metadata: {working_copy}")


def _parse_report_id(text: str) -> uuid.UUID:
    """Parse a report id typed on the command line, or fail with a one-line error."""
    try:
        return uuid.UUID(text)
    except ValueError as exc:
        raise click.ClickException(f"{text!r} is not a report id") from exc


# --------------------------------------------------------------------------- users and audit


@users_cli.command("create-organizer")
@click.argument("username")
@clear_errors
def users_create_organizer(username: str) -> None:
    """Create an organizer account and print its TOTP enrollment URI (once)."""
    from incidents.db import db
    from incidents.services import accounts

    password = os.environ.get("INCIDENTS_USER_PASSWORD")
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt="Repeat it")
    try:
        user = accounts.create_user(
            username=username, password=password, role="organizer", actor="cli"
        )
    except accounts.AccountError as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from exc
    secret = accounts.new_totp_secret()
    user.totp_secret = secret
    db.session.commit()
    click.echo(f"Organizer {user.username} created.")
    click.echo("Add this to an authenticator app (shown once; anyone who sees it can log in):")
    click.echo(f"  {accounts.totp_uri(secret=secret, username=user.username)}")
    click.echo(f"  (manual entry key: {secret})")


@audit_cli.command("verify")
def audit_verify() -> None:
    """Recompute the audit hash chain and report the first broken link, if any."""
    from incidents import audit

    report = audit.verify()
    if report.is_intact:
        click.echo(f"Audit chain intact: {report.checked} events; head {report.head_hash}")
        return
    click.echo(
        f"Audit chain BROKEN at event {report.broken_seq}: {report.problem} "
        f"({report.checked} events before it are intact)",
        err=True,
    )
    raise SystemExit(1)


# --------------------------------------------------------------------------- exports


def export_range_options(command: Callable[P, R]) -> Callable[P, R]:
    """The options every export command shares: quarters, destination and ledger actor."""
    for option in reversed(
        (
            click.option("--from", "first", required=True, help="First quarter, e.g. 2025Q1."),
            click.option(
                "--to", "last", required=True, help="Last quarter (must be closed), e.g. 2025Q4."
            ),
            click.option("--out", "out", type=click.Path(path_type=Path), required=True),
            click.option(
                "--actor", default="cli", show_default=True, help="Who runs it, for the ledger."
            ),
        )
    ):
        command = option(command)
    return command


@export_cli.command("counts")
@export_range_options
@click.option(
    "--by",
    "by",
    type=click.Choice(["country"]),
    default=None,
    help="Also break the counts down by country (fixed public list plus 'other').",
)
@click.option("--epsilon", default=None, help="Privacy cost of this export (default: settings).")
@clear_errors
def export_counts(
    first: str, last: str, by: str | None, out: Path, epsilon: str | None, actor: str
) -> None:
    """P1: differentially private counts per quarter and category group (OpenDP)."""
    from datetime import UTC, datetime
    from decimal import Decimal, InvalidOperation

    from incidents.services import exports

    settings = current_settings()
    try:
        cost = Decimal(epsilon or settings.export_epsilon)
        cap = Decimal(settings.export_yearly_cap)
    except InvalidOperation as exc:
        raise click.ClickException(
            "ε and the yearly cap are decimal numbers, e.g. 1 or 0.5"
        ) from exc
    with click.progressbar(length=0, label="Counting consenting reports", file=sys.stderr) as bar:
        result = exports.export_counts(
            first=first,
            last=last,
            by_country=by == "country",
            actor=actor,
            destination=out,
            epsilon=cost,
            yearly_cap=cap,
            contributions=settings.export_contributions,
            today=datetime.now(UTC).date(),
            progress=bar.update,
        )
    click.echo(f"Export {result.export_id}: {result.archive}")
    click.echo(f"SHA-256 of the package: {result.sha256}")
    click.echo(
        f"ε = {result.counts.epsilon} charged to the ledger; each count is within "
        f"±{result.counts.error_95:.1f} of the truth 95 times out of 100."
    )


@export_cli.command("suppressed")
@export_range_options
@click.option("--by", "by", type=click.Choice(["country"]), default=None)
@clear_errors
def export_suppressed(first: str, last: str, by: str | None, out: Path, actor: str) -> None:
    """P3: exact counts with cells 1-9 hidden and secondary suppression (vetted partners)."""
    from datetime import UTC, datetime

    from incidents.services import exports

    result = exports.export_suppressed(
        first=first,
        last=last,
        by_country=by == "country",
        actor=actor,
        destination=out,
        today=datetime.now(UTC).date(),
    )
    click.echo(f"Export {result.export_id}: {result.archive}")
    click.echo(f"SHA-256 of the package: {result.sha256}")
    click.echo(
        f"{result.table.primary} entries hidden as 1-9, {result.table.secondary} more so that no "
        "hidden entry follows from a total. For vetted partners only."
    )


@export_cli.command("timeline")
@export_range_options
@clear_errors
def export_timeline(first: str, last: str, out: Path, actor: str) -> None:
    """P2: one generalized row per incident, k >= 10 and l >= 2 (vetted partners)."""
    from datetime import UTC, datetime

    from incidents.services import exports

    result = exports.export_timeline(
        first=first, last=last, actor=actor, destination=out, today=datetime.now(UTC).date()
    )
    anonymized = result.timeline
    click.echo(f"Export {result.export_id}: {result.archive}")
    click.echo(f"SHA-256 of the package: {result.sha256}")
    click.echo(
        f"{len(anonymized.rows)} rows at {anonymized.generalization}; smallest group "
        f"{anonymized.smallest_class} (k >= {anonymized.k}), {anonymized.suppressed} of "
        f"{anonymized.total} left out. For vetted partners only."
    )


@export_cli.command("ledger")
@clear_errors
def export_ledger() -> None:
    """Show the privacy budget spent this year and check the ledger's hash chain."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from incidents.exports import ledger

    settings = current_settings()
    year = datetime.now(UTC).year
    spent = ledger.spent_in(year)
    cap = Decimal(settings.export_yearly_cap)
    click.echo(f"{year}: ε spent {spent} of {cap} (left {max(Decimal(0), cap - spent)})")
    report = ledger.verify()
    if report.is_intact:
        click.echo(f"Ledger chain intact: {report.checked} entries; head {report.head_hash}")
        return
    click.echo(f"Ledger chain BROKEN at entry {report.broken_seq}", err=True)
    raise SystemExit(1)


# --------------------------------------------------------------------------- demo


@demo_cli.command("prepare")
@clear_errors
def demo_prepare() -> None:
    """Upgrade the database and, if no organizer key is configured, create a demo key."""
    from flask_migrate import upgrade

    settings = current_settings()
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    upgrade()
    if not settings.is_demo_key:
        click.echo(f"Using the configured organizer key {settings.organizer_public_key_path}.")
        return
    demo = settings.demo_directory()
    public_path = demo / DEMO_PUBLIC_KEY
    if public_path.exists():
        click.echo(f"Using the demo organizer key in {demo} (created earlier).")
        return
    passphrase = crypto.random_passphrase()
    public_key = write_key_pair(
        crypto.PrivateKey.generate(),
        out=demo / DEMO_PRIVATE_KEY,
        public_out=public_path,
        passphrase=passphrase,
    )
    write_new_file(demo / DEMO_KEY_ID, public_key.key_id_hex + "\n", mode=0o644)
    _announce_demo_key(demo, public_key, passphrase)


@demo_cli.command("seed")
@click.option(
    "--reports", "count", type=click.IntRange(1, 1_000_000), default=400, show_default=True
)
@click.option("--months", type=click.IntRange(1, 120), default=24, show_default=True)
@click.option("--seed", "seed", type=int, default=None, help="Repeatable data for benchmarks.")
@clear_errors
def demo_seed(count: int, months: int, seed: int | None) -> None:
    """Fill the database with synthetic reports, sealed to the configured organizer key."""
    from datetime import UTC, datetime

    from incidents.services import demo

    settings = current_settings()
    if settings.is_production:
        raise click.ClickException("synthetic reports are never added to a production database")
    with click.progressbar(length=count, label="Sealing synthetic reports", file=sys.stderr) as bar:
        stored = demo.seed_reports(
            count,
            keyring=current_keyring(),
            receipt_secret=settings.receipt_key,
            today=datetime.now(UTC).date(),
            months=months,
            seed=seed,
            progress=bar.update,
        )
    click.echo(f"{stored} synthetic reports stored (their receipts were not kept).")


def _announce_demo_key(demo: Path, public_key: crypto.PublicKey, passphrase: str) -> None:
    """Print the demo key's file, passphrase and key id once, in a banner."""
    lines: list[Any] = [
        "",
        "=" * 72,
        "DEMO KEY created for this local installation only. Never use it for real reports.",
        f"  private key file: {demo / DEMO_PRIVATE_KEY}",
        f"  passphrase:       {passphrase}",
        "  (shown once: copy it now to open demo reports with 'reports open')",
        f"  key id:           {public_key.key_id_hex}",
        "=" * 72,
        "",
    ]
    for line in lines:
        click.echo(line)


# --------------------------------------------------------------------------- desk

DESK_TOKEN_VARIABLE = "INCIDENTS_DESK_TOKEN"  # noqa: S105 (the name of a variable, not a secret)


def default_desk_cache() -> Path:
    """Where a desk keeps its ciphertext cache unless told otherwise."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "incidents-desk"


@click.command("desk")
@click.option("--key", "key_path", type=click.Path(path_type=Path), required=True)
@click.option("--server", "server_url", default=None, help="Server address (omit when air-gapped).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5001, show_default=True, type=int)
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path), default=None)
def desk_command(
    key_path: Path, server_url: str | None, host: str, port: int, cache_dir: Path | None
) -> None:
    """Start the desk on this computer: decrypt and work cases with your own key."""
    from werkzeug.serving import make_server

    from incidents.desk import (
        DeskSettings,
        DeskStartError,
        create_desk_app,
        mount_under_secret_path,
    )

    settings = DeskSettings(
        key_path=key_path,
        server_url=server_url,
        cache_dir=cache_dir or default_desk_cache(),
        host=host,
        port=port,
    )
    try:
        desk = create_desk_app(settings)
    except DeskStartError as exc:
        raise click.ClickException(str(exc)) from exc
    desk.extensions["incidents.desk"].start_idle_watch()
    click.echo(f"Desk for key {desk.extensions['incidents.desk'].key_id}")
    prefix, application = mount_under_secret_path(desk)
    click.echo(f"Open http://{host}:{port}{prefix}/ in your browser. Stop with Ctrl+C.")
    # Flask ignores app.run() inside a "flask" command, so serve with Werkzeug directly (its
    # threaded server, without the reloader or debugger; the desk listens on loopback only).
    server = make_server(host, port, application, threaded=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("Desk stopped; the key is no longer in memory.")
    finally:
        server.server_close()


@keys_cli.command("rotate")
@click.option("--old", "old_path", type=click.Path(path_type=Path), required=True)
@click.option("--new", "new_path", type=click.Path(path_type=Path), required=True)
@click.option("--server", "server_url", required=True)
@clear_errors
def keys_rotate(old_path: Path, new_path: Path, server_url: str) -> None:
    """Re-wrap every report to a new organizer key, then move the server's pin to it."""
    from incidents.desk import is_acceptable_server
    from incidents.desk.client import DeskClientError, ServerClient, UrllibTransport
    from incidents.desk.rotation import RotationRefusedError, rotate_organizer_key

    if not is_acceptable_server(server_url):
        raise click.ClickException(
            "the server address must start with https:// (http:// only for this computer)"
        )
    old = read_private_key(old_path, prompt="Passphrase of the OLD key file")
    new = read_private_key(new_path, prompt="Passphrase of the NEW key file")
    token = os.environ.get(DESK_TOKEN_VARIABLE) or click.prompt(
        "API token", hide_input=True, err=True
    )
    transport = UrllibTransport(server_url)

    def make_client(key_id: str) -> ServerClient:
        """A client presenting ``key_id``."""
        holder = old if key_id == old.key_id.hex() else new
        return ServerClient(transport, token=token, key_id=key_id, private_key=holder)

    with click.progressbar(length=1, label="Re-wrapping", file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            """Advance the bar."""
            bar.length = max(total, 1)
            bar.update(done - bar.pos)

        try:
            result = rotate_organizer_key(make_client, old=old, new=new, progress=progress)
        except (DeskClientError, RotationRefusedError) as exc:
            raise click.ClickException(
                f"{exc}. Nothing is lost: run the same command again to continue."
            ) from exc
    if result.already_done:
        click.echo(f"The rotation was already finished; the pin is {result.organizer_key_id}.")
    else:
        click.echo(f"{result.rewrapped} wraps moved; the pin is now {result.organizer_key_id}.")
    click.echo(
        "Now set INCIDENTS_ORGANIZER_KEY_ID and the organizer public key file to the new key, "
        "and keep the old key file until you have checked that reports open with the new one."
    )
