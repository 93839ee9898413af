"""The organizer's command-line tools: ``keys init/show/backup/restore`` and ``reports list/open``.

Key commands do not touch the database, so they run on one SQLite app; report commands use the
``runner`` fixture and run on SQLite and PostgreSQL. Every expected failure must end with one
clear ``Error:`` line and a non-zero exit status, never a traceback.

Creating a key file costs a real Argon2id derivation (256 MiB); all tests but one write key
files with the cheap test parameters by wrapping ``cli.write_key_pair``.
"""

from __future__ import annotations

import functools
import json
import os
import re
import stat
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from incidents import cli, create_app, crypto
from incidents.config import Settings
from incidents.db import db
from incidents.models import Report, Wrap
from tests.conftest import TEST_KDF, KeyFiles
from tests.factories import submit_report

PASSPHRASE = "a long enough passphrase"
REAL_WRITE_KEY_PAIR = cli.write_key_pair
SHELL_FIELDS = {
    "id",
    "received_on",
    "status",
    "category",
    "occurred_period",
    "date_precision",
    "country",
    "city",
    "geo_precision",
    "perpetrator_type",
    "consent_contact",
    "consent_statistics",
    "duplicate_of",
}


@pytest.fixture(autouse=True)
def fast_key_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Write key files with the cheap test KDF; no passphrase in the environment by default."""
    monkeypatch.setattr(cli, "write_key_pair", functools.partial(REAL_WRITE_KEY_PAIR, kdf=TEST_KDF))
    monkeypatch.delenv(cli.PASSPHRASE_VARIABLE, raising=False)


@pytest.fixture
def key_runner(tmp_path: Path, organizer: KeyFiles) -> FlaskCliRunner:
    """A runner on an app pinned to the session's organizer key (no database needed)."""
    settings = Settings.for_testing(
        tmp_path,
        organizer_public_key_path=organizer.public_path,
        organizer_key_id=organizer.public_key.key_id_hex,
    )
    return create_app(settings).test_cli_runner()


def env(passphrase: str | None = PASSPHRASE) -> dict[str, str | None]:
    """Environment for one invocation (``None`` removes the variable)."""
    return {cli.PASSPHRASE_VARIABLE: passphrase}


def printed(result: Result, label: str) -> str:
    """The value printed after ``label:`` (e.g. "Key id")."""
    match = re.search(rf"^{re.escape(label)}:\s+(.+)$", result.stdout, re.M)
    assert match, f"no {label!r} in output:\n{result.output}"
    return match.group(1).strip()


def assert_clear_error(result: Result, *fragments: str) -> None:
    """One ``Error:`` line naming the problem, a non-zero status and no traceback."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment.lower() in errors[0].lower(), errors[0]


def mode_of(path: Path) -> int:
    """Permission bits of a file."""
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- keys init


def test_keys_init_writes_a_protected_key_pair_with_the_default_cost(
    key_runner: FlaskCliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the real Argon2id cost (this is the one test that pays for it),
    when an organizer runs ``keys init`` with the passphrase in the environment,
    then a 0600 private key file and a public key file exist, the printed key id and
    fingerprint are those of the public key, and the file header records t=3, m=256 MiB, p=4.
    """
    monkeypatch.setattr(cli, "write_key_pair", REAL_WRITE_KEY_PAIR)
    private_path, public_path = tmp_path / "org.key", tmp_path / "keys" / "org.pub"

    result = key_runner.invoke(
        args=["keys", "init", "--out", str(private_path), "--public-out", str(public_path)],
        env=env(),
    )

    assert result.exit_code == 0, result.output
    assert mode_of(private_path) == 0o600
    public_key = crypto.PublicKey.from_armor(public_path.read_text())
    assert printed(result, "Key id") == public_key.key_id_hex
    assert printed(result, "Fingerprint") == public_key.fingerprint
    assert re.fullmatch(r"([0-9A-F]{4} ){9}[0-9A-F]{4}", public_key.fingerprint)
    info = crypto.inspect_private_key_file(private_path.read_text())
    assert info.key_id == public_key.key_id
    assert info.kdf == crypto.KdfParams(iterations=3, memory_kib=256 * 1024, lanes=4)
    assert PASSPHRASE not in result.output
    assert "BEGIN INCIDENTS PRIVATE KEY" not in result.output


def test_keys_init_key_file_opens_with_its_passphrase(
    key_runner: FlaskCliRunner, tmp_path: Path
) -> None:
    private_path, public_path = tmp_path / "org.key", tmp_path / "org.pub"

    result = key_runner.invoke(
        args=["keys", "init", "--out", str(private_path), "--public-out", str(public_path)],
        env=env(),
    )

    assert result.exit_code == 0, result.output
    private_key = crypto.decrypt_private_key(private_path.read_text(), passphrase=PASSPHRASE)
    assert private_key.public_key().to_armor() == public_path.read_text()
    assert not mode_of(public_path) & 0o022, "others must not be able to replace the public key"
    with pytest.raises(crypto.WrongPassphraseError):
        crypto.decrypt_private_key(private_path.read_text(), passphrase=PASSPHRASE + "x")


def test_keys_init_asks_twice_for_the_passphrase(
    key_runner: FlaskCliRunner, tmp_path: Path
) -> None:
    private_path = tmp_path / "org.key"

    result = key_runner.invoke(
        args=["keys", "init", "--out", str(private_path)],
        input=f"{PASSPHRASE}\n{PASSPHRASE}\n",
        env=env(None),
    )

    assert result.exit_code == 0, result.output
    assert "Repeat the passphrase" in result.output
    assert PASSPHRASE not in result.output, "the passphrase must not be echoed"
    crypto.decrypt_private_key(private_path.read_text(), passphrase=PASSPHRASE)


def test_keys_init_refuses_two_different_passphrases(
    key_runner: FlaskCliRunner, tmp_path: Path
) -> None:
    private_path, public_path = tmp_path / "org.key", tmp_path / "org.pub"

    result = key_runner.invoke(
        args=["keys", "init", "--out", str(private_path), "--public-out", str(public_path)],
        input="first passphrase one\nsecond passphrase two\n",
        env=env(None),
    )

    assert result.exit_code != 0
    assert "do not match" in result.output
    assert "Traceback" not in result.output
    assert not private_path.exists()
    assert not public_path.exists()


@pytest.mark.parametrize("passphrase", ["short", "elevenchars", " " * 3])
def test_keys_init_refuses_a_short_passphrase(
    key_runner: FlaskCliRunner, tmp_path: Path, passphrase: str
) -> None:
    private_path, public_path = tmp_path / "org.key", tmp_path / "org.pub"

    result = key_runner.invoke(
        args=["keys", "init", "--out", str(private_path), "--public-out", str(public_path)],
        env=env(passphrase),
    )

    assert_clear_error(result, "at least 12 characters")
    assert not private_path.exists()
    assert not public_path.exists()


@pytest.mark.parametrize("existing", ["private", "public"])
def test_keys_init_refuses_to_overwrite_existing_files(
    key_runner: FlaskCliRunner, tmp_path: Path, existing: str
) -> None:
    private_path, public_path = tmp_path / "org.key", tmp_path / "org.pub"
    target = private_path if existing == "private" else public_path
    target.write_text("precious\n")

    result = key_runner.invoke(
        args=["keys", "init", "--out", str(private_path), "--public-out", str(public_path)],
        env=env(),
    )

    assert_clear_error(result, "already exists")
    assert target.read_text() == "precious\n"
    other = public_path if existing == "private" else private_path
    assert not other.exists(), "nothing may be written when one target exists"


# --------------------------------------------------------------------------- keys show


def test_keys_show_prints_the_id_and_fingerprint_of_a_public_key(
    key_runner: FlaskCliRunner, organizer: KeyFiles
) -> None:
    result = key_runner.invoke(args=["keys", "show", "--public", str(organizer.public_path)])

    assert result.exit_code == 0, result.output
    assert printed(result, "Key id") == organizer.public_key.key_id_hex
    assert printed(result, "Fingerprint") == organizer.public_key.fingerprint
    assert "Pinned" not in result.output


def test_keys_show_of_a_new_key_matches_keys_init(
    key_runner: FlaskCliRunner, tmp_path: Path
) -> None:
    public_path = tmp_path / "org.pub"
    created = key_runner.invoke(
        args=["keys", "init", "--out", str(tmp_path / "org.key"), "--public-out", str(public_path)],
        env=env(),
    )

    shown = key_runner.invoke(args=["keys", "show", "--public", str(public_path)])

    assert shown.exit_code == 0, shown.output
    assert printed(shown, "Key id") == printed(created, "Key id")
    assert printed(shown, "Fingerprint") == printed(created, "Fingerprint")


def test_keys_show_says_the_configured_key_is_pinned(
    key_runner: FlaskCliRunner, organizer: KeyFiles
) -> None:
    result = key_runner.invoke(args=["keys", "show"])

    assert result.exit_code == 0, result.output
    assert printed(result, "Key id") == organizer.public_key.key_id_hex
    assert printed(result, "Pinned").startswith("yes")


@pytest.mark.parametrize("pin", [None, "00" * 16])
def test_keys_show_says_when_the_configured_key_is_not_pinned(
    tmp_path: Path, organizer: KeyFiles, pin: str | None
) -> None:
    settings = Settings.for_testing(
        tmp_path, organizer_public_key_path=organizer.public_path, organizer_key_id=pin
    )

    result = create_app(settings).test_cli_runner().invoke(args=["keys", "show"])

    assert result.exit_code == 0, result.output
    assert printed(result, "Pinned").startswith("NO")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "does not exist"),
        ("hello, not a key\n", "not an armored"),
        (b"\xff\xd8\xff\xe0 a jpeg".decode("latin-1"), "not a public key file"),
    ],
)
def test_keys_show_refuses_what_is_not_a_public_key(
    key_runner: FlaskCliRunner, tmp_path: Path, content: str | None, fragment: str
) -> None:
    path = tmp_path / "org.pub"
    if content is not None:
        path.write_text(content, encoding="latin-1")

    result = key_runner.invoke(args=["keys", "show", "--public", str(path)])

    assert_clear_error(result, fragment)


def test_keys_show_refuses_a_private_key_file_as_public(
    key_runner: FlaskCliRunner, organizer: KeyFiles
) -> None:
    result = key_runner.invoke(args=["keys", "show", "--public", str(organizer.private_path)])

    assert_clear_error(result, "public key")


# --------------------------------------------------------------------------- backup / restore


def backup_shares(key_runner: FlaskCliRunner, organizer: KeyFiles) -> list[str]:
    """Run ``keys backup`` on the organizer key and return the printed shares."""
    result = key_runner.invoke(
        args=["keys", "backup", "--key", str(organizer.private_path)],
        env=env(organizer.passphrase),
    )
    assert result.exit_code == 0, result.output
    return re.findall(r"^Share \d of 5:\n  (.+)$", result.stdout, re.M)


def test_keys_backup_prints_five_word_shares(
    key_runner: FlaskCliRunner, organizer: KeyFiles
) -> None:
    shares = backup_shares(key_runner, organizer)

    assert len(shares) == 5
    assert len(set(shares)) == 5
    for share in shares:
        words = share.split()
        assert len(words) >= 20
        assert all(re.fullmatch(r"[a-z]+", word) for word in words)


@pytest.mark.parametrize("chosen", [(0, 1, 2), (1, 3, 4), (4, 0, 2)])
def test_keys_restore_rebuilds_the_key_from_any_three_shares(
    key_runner: FlaskCliRunner, organizer: KeyFiles, tmp_path: Path, chosen: tuple[int, ...]
) -> None:
    shares = backup_shares(key_runner, organizer)
    restored_path, public_path = tmp_path / "restored.key", tmp_path / "restored.pub"

    result = key_runner.invoke(
        args=["keys", "restore", "--out", str(restored_path), "--public-out", str(public_path)],
        input="".join(f"{shares[i]}\n" for i in chosen),
        env=env(),
    )

    assert result.exit_code == 0, result.output
    assert printed(result, "Key id") == organizer.public_key.key_id_hex
    assert mode_of(restored_path) == 0o600
    restored = crypto.decrypt_private_key(restored_path.read_text(), passphrase=PASSPHRASE)
    assert restored.seed == organizer.private_key.seed
    assert public_path.read_text() == organizer.public_key.to_armor()


def test_keys_restore_with_two_shares_is_refused(
    key_runner: FlaskCliRunner, organizer: KeyFiles, tmp_path: Path
) -> None:
    shares = backup_shares(key_runner, organizer)
    restored_path = tmp_path / "restored.key"

    result = key_runner.invoke(
        args=["keys", "restore", "--out", str(restored_path)],
        input=f"{shares[0]}\n\n{shares[3]}\n",
        env=env(),
    )

    assert_clear_error(result, "3 shares")
    assert not restored_path.exists()


def test_keys_restore_with_a_damaged_share_is_refused(
    key_runner: FlaskCliRunner, organizer: KeyFiles, tmp_path: Path
) -> None:
    shares = backup_shares(key_runner, organizer)
    words = shares[2].split()
    words[5] = "academic" if words[5] != "academic" else "acid"
    restored_path = tmp_path / "restored.key"

    result = key_runner.invoke(
        args=["keys", "restore", "--out", str(restored_path)],
        input=f"{shares[0]}\n{shares[1]}\n{' '.join(words)}\n",
        env=env(),
    )

    assert_clear_error(result, "shares do not combine")
    assert not restored_path.exists()


def test_keys_backup_with_a_wrong_passphrase_prints_no_shares(
    key_runner: FlaskCliRunner, organizer: KeyFiles
) -> None:
    result = key_runner.invoke(
        args=["keys", "backup", "--key", str(organizer.private_path)], env=env("not the one at all")
    )

    assert_clear_error(result, "wrong passphrase")
    assert "Share" not in result.output


# --------------------------------------------------------------------------- reports list / open


def file_reports(client: FlaskClient, count: int, **overrides: str) -> None:
    """File ``count`` reports through the form."""
    for _ in range(count):
        assert submit_report(client, **overrides).status_code == 200


def report_ids(app: Flask) -> list[uuid.UUID]:
    """Ids of the stored reports."""
    with app.app_context():
        return list(db.session.scalars(sa.select(Report.id)).all())


def open_report(runner: FlaskCliRunner, report_id: object, key: Path, passphrase: str) -> Result:
    """Run ``reports open`` with the passphrase in the environment."""
    return runner.invoke(
        args=["reports", "open", str(report_id), "--key", str(key)], env=env(passphrase)
    )


def test_reports_list_json_gives_ids_and_shell_fields_only(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner
) -> None:
    secret = "SECRET-NARRATIVE-7f3a"
    file_reports(client, 2, narrative=secret, place_detail=secret, occurred_on="2024-02-29")

    result = runner.invoke(args=["reports", "list", "--json"])

    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert {entry["id"] for entry in listed} == {str(i) for i in report_ids(app)}
    for entry in listed:
        assert set(entry) == SHELL_FIELDS
        assert entry["occurred_period"] == "2024-W09"
        assert entry["category"] == "threat"
    assert secret not in result.output
    assert "2024-02-29" not in result.output
    with app.app_context():
        hashes = db.session.scalars(sa.select(Report.witness_lookup_hash)).all()
    for lookup_hash in hashes:
        assert lookup_hash.hex() not in result.output


def test_reports_list_of_an_empty_register_is_an_empty_list(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["reports", "list", "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []


def test_reports_list_as_text_shows_one_line_per_report(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner
) -> None:
    file_reports(client, 3)

    result = runner.invoke(args=["reports", "list"])

    assert result.exit_code == 0, result.output
    for report_id in report_ids(app):
        assert str(report_id) in result.stdout
    assert "3 report(s)" in result.stderr


def test_reports_open_prints_every_decrypted_field(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, organizer: KeyFiles
) -> None:
    values = {
        "place_detail": "Knez Mihailova 12",
        "narrative": "Они ждали у двери. Čekali su ispred vrata.",
        "targeted_person": "my brother",
        "perpetrator_description": "two men, grey Lada",
        "contact": "signal: brother.12",
    }
    file_reports(client, 1, occurred_on="2025-01-02", **values)
    (report_id,) = report_ids(app)

    result = open_report(runner, report_id, organizer.private_path, organizer.passphrase)

    assert result.exit_code == 0, result.output
    opened = json.loads(result.stdout)
    assert opened["id"] == str(report_id)
    assert opened["sealed"] == {"occurred_on": "2025-01-02", **values}
    assert set(opened) >= SHELL_FIELDS


def test_reports_open_asks_for_the_passphrase_when_it_is_not_in_the_environment(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, organizer: KeyFiles
) -> None:
    file_reports(client, 1)
    (report_id,) = report_ids(app)

    result = runner.invoke(
        args=["reports", "open", str(report_id), "--key", str(organizer.private_path)],
        input=f"{organizer.passphrase}\n",
    )

    assert result.exit_code == 0, result.output
    assert organizer.passphrase not in result.output
    assert json.loads(result.stdout)["id"] == str(report_id)


@pytest.fixture
def one_report(app: Flask, client: FlaskClient) -> uuid.UUID:
    """The id of one report filed through the form."""
    file_reports(client, 1)
    (report_id,) = report_ids(app)
    return report_id


def test_reports_open_with_a_wrong_passphrase_fails_clearly(
    runner: FlaskCliRunner, organizer: KeyFiles, one_report: uuid.UUID
) -> None:
    result = open_report(runner, one_report, organizer.private_path, "wrong but long enough")

    assert_clear_error(result, "wrong passphrase")
    assert "sealed" not in result.stdout


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        pytest.param("just some random text\nnothing more\n", "not an armored", id="random-text"),
        pytest.param("", "not an armored", id="empty-file"),
        pytest.param(None, "does not exist", id="missing-file"),
        pytest.param("public", "not an armored incidents private key", id="public-key-file"),
        pytest.param(
            "-----BEGIN INCIDENTS PRIVATE KEY-----\n\nAAAA\n-----END INCIDENTS PRIVATE KEY-----\n",
            "truncated",
            id="truncated-key-file",
        ),
        pytest.param("\udcff binary", "not a private key file", id="binary-file"),
    ],
)
def test_reports_open_with_something_that_is_not_a_key_file_fails_clearly(
    runner: FlaskCliRunner,
    organizer: KeyFiles,
    one_report: uuid.UUID,
    tmp_path: Path,
    content: str | None,
    fragment: str,
) -> None:
    key_path = tmp_path / "not-a-key"
    if content == "public":
        key_path.write_text(organizer.public_path.read_text())
    elif content is not None:
        key_path.write_bytes(content.encode("utf-8", "surrogateescape"))

    result = open_report(runner, one_report, key_path, organizer.passphrase)

    assert_clear_error(result, fragment)


def test_reports_open_with_a_directory_as_key_fails_clearly(
    runner: FlaskCliRunner, organizer: KeyFiles, one_report: uuid.UUID, tmp_path: Path
) -> None:
    result = open_report(runner, one_report, tmp_path, organizer.passphrase)

    assert_clear_error(result)


@pytest.mark.parametrize(
    ("report_id", "fragment"),
    [
        pytest.param(str(uuid.uuid4()), "no report", id="unknown-id"),
        pytest.param("12345", "is not a report id", id="malformed-id"),
        pytest.param("../../etc/passwd", "is not a report id", id="path-as-id"),
    ],
)
def test_reports_open_of_a_report_that_is_not_there_fails_clearly(
    runner: FlaskCliRunner,
    organizer: KeyFiles,
    one_report: uuid.UUID,
    report_id: str,
    fragment: str,
) -> None:
    result = open_report(runner, report_id, organizer.private_path, organizer.passphrase)

    assert_clear_error(result, fragment)


def update_report(app: Flask, report_id: uuid.UUID, **values: bytes) -> None:
    """Overwrite columns of one report with a SQL UPDATE, as an attacker with the DB could."""
    with app.app_context():
        db.session.execute(sa.update(Report).where(Report.id == report_id).values(**values))
        db.session.commit()


def update_wrap(app: Flask, report_id: uuid.UUID, blob: bytes) -> None:
    """Overwrite the organizer wrap of one report."""
    with app.app_context():
        db.session.execute(sa.update(Wrap).where(Wrap.report_id == report_id).values(blob=blob))
        db.session.commit()


def stored(app: Flask, report_id: uuid.UUID) -> tuple[Report, Wrap]:
    """The report row and its wrap."""
    with app.app_context():
        report = db.session.get_one(Report, report_id)
        wrap = db.session.scalars(sa.select(Wrap).where(Wrap.report_id == report_id)).one()
        db.session.expunge_all()
    return report, wrap


def flip(blob: bytes, index: int) -> bytes:
    """``blob`` with one bit flipped at ``index``."""
    changed = bytearray(blob)
    changed[index] ^= 0x01
    return bytes(changed)


@pytest.mark.parametrize("index", [20, -1], ids=["ciphertext-byte", "tag-byte"])
def test_reports_open_of_a_tampered_field_fails_clearly(
    app: Flask,
    runner: FlaskCliRunner,
    organizer: KeyFiles,
    one_report: uuid.UUID,
    index: int,
) -> None:
    report, _wrap = stored(app, one_report)
    update_report(app, one_report, narrative_sealed=flip(report.narrative_sealed, index))

    result = open_report(runner, one_report, organizer.private_path, organizer.passphrase)

    assert_clear_error(result, "decryption failed", "narrative")
    assert "Two men followed me" not in result.output


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        pytest.param(lambda blob: blob[:10], "truncated", id="truncated"),
        pytest.param(lambda blob: blob[:-1], "decryption failed", id="last-byte-cut"),
        pytest.param(lambda blob: blob + b"\x00", "decryption failed", id="extended"),
        pytest.param(lambda blob: b"\x02" + blob[1:], "format version", id="other-version"),
        pytest.param(lambda blob: b"", "truncated", id="emptied"),
    ],
)
def test_reports_open_of_a_damaged_field_fails_clearly(
    app: Flask,
    runner: FlaskCliRunner,
    organizer: KeyFiles,
    one_report: uuid.UUID,
    change: object,
    fragment: str,
) -> None:
    report, _wrap = stored(app, one_report)
    assert callable(change)
    # place_detail: an emptied contact column is a legitimate erasure (models.ERASABLE_FIELDS)
    update_report(app, one_report, place_detail_sealed=change(report.place_detail_sealed))

    result = open_report(runner, one_report, organizer.private_path, organizer.passphrase)

    assert_clear_error(result, fragment)


def test_reports_open_of_a_field_moved_from_another_report_fails_clearly(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, organizer: KeyFiles
) -> None:
    """Given reports A and B,
    when B's narrative column is overwritten with A's (valid) sealed narrative,
    then opening B fails with a clear message, and A still opens.
    """
    file_reports(client, 1, narrative="A: the first witness")
    (report_a,) = report_ids(app)
    file_reports(client, 1, narrative="B: the second witness")
    (report_b,) = set(report_ids(app)) - {report_a}
    sealed_a, _ = stored(app, report_a)
    update_report(app, report_b, narrative_sealed=sealed_a.narrative_sealed)

    moved = open_report(runner, report_b, organizer.private_path, organizer.passphrase)
    original = open_report(runner, report_a, organizer.private_path, organizer.passphrase)

    assert_clear_error(moved, "decryption failed", "narrative")
    assert "first witness" not in moved.output
    assert original.exit_code == 0
    assert json.loads(original.stdout)["sealed"]["narrative"] == "A: the first witness"


def test_reports_open_of_a_field_moved_to_another_field_fails_clearly(
    app: Flask, runner: FlaskCliRunner, organizer: KeyFiles, one_report: uuid.UUID
) -> None:
    report, _wrap = stored(app, one_report)
    update_report(app, one_report, contact_sealed=report.place_detail_sealed)

    result = open_report(runner, one_report, organizer.private_path, organizer.passphrase)

    assert_clear_error(result, "decryption failed", "contact")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        pytest.param(lambda blob: flip(blob, -1), "decryption failed", id="tag-byte"),
        pytest.param(lambda blob: flip(blob, 40), "decryption failed", id="encapsulation-byte"),
        pytest.param(lambda blob: flip(blob, 3), "decryption failed", id="key-id-byte"),
        pytest.param(lambda blob: blob[:60], "decryption failed", id="truncated"),
        pytest.param(lambda blob: blob[:1], "truncated", id="header-only"),
    ],
)
def test_reports_open_with_a_tampered_wrap_fails_clearly(
    app: Flask,
    runner: FlaskCliRunner,
    organizer: KeyFiles,
    one_report: uuid.UUID,
    change: object,
    fragment: str,
) -> None:
    _report, wrap = stored(app, one_report)
    assert callable(change)
    update_wrap(app, one_report, change(wrap.blob))

    result = open_report(runner, one_report, organizer.private_path, organizer.passphrase)

    assert_clear_error(result, fragment)


def test_reports_open_with_a_wrap_moved_from_another_report_fails_clearly(
    app: Flask, client: FlaskClient, runner: FlaskCliRunner, organizer: KeyFiles
) -> None:
    file_reports(client, 1)
    (report_a,) = report_ids(app)
    file_reports(client, 1)
    (report_b,) = set(report_ids(app)) - {report_a}
    _, wrap_a = stored(app, report_a)
    update_wrap(app, report_b, wrap_a.blob)

    result = open_report(runner, report_b, organizer.private_path, organizer.passphrase)

    assert_clear_error(result, "decryption failed")


def test_reports_open_with_another_valid_key_fails_clearly(
    runner: FlaskCliRunner, one_report: uuid.UUID, tmp_path: Path
) -> None:
    other_path = tmp_path / "other.key"
    other_path.write_text(
        crypto.encrypt_private_key(
            crypto.PrivateKey.generate(), passphrase=PASSPHRASE, kdf=TEST_KDF
        )
    )

    result = open_report(runner, one_report, other_path, PASSPHRASE)

    assert_clear_error(result, "not wrapped to this key")


def test_no_cli_error_message_leaks_the_passphrase(
    runner: FlaskCliRunner, organizer: KeyFiles, one_report: uuid.UUID
) -> None:
    wrong = "my-secret-wrong-passphrase"
    result = open_report(runner, one_report, organizer.private_path, wrong)

    assert_clear_error(result)
    assert wrong not in result.output
    assert os.environ.get(cli.PASSPHRASE_VARIABLE) is None
