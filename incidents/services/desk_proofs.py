"""Proof that a desk holds its private key, before the server accepts changes from it.

An API token or a logged-in browser alone must not be enough to store notes, replies, grants,
status changes or rotations: someone who stole either could otherwise forge replies to a
witness or replace a case's ciphertext with invented content. So the server seals a random
secret to the desk's key (``crypto.new_possession_challenge``) and keeps only the SHA-256 of
the expected answer:

* online, on the token: a right answer marks the token proven for 30 minutes;
* offline, in the bundle file: the outputs file must carry the answer, for 30 days or until the
  next bundle file replaces the challenge.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, timedelta

from incidents import crypto
from incidents.clock import as_utc, now
from incidents.db import db
from incidents.keyring import Keyring
from incidents.models import ApiToken, RecipientKey, User
from incidents.services.errors import DomainError
from incidents.vocabulary import N_

TOKEN_PROOF_LIFETIME = timedelta(minutes=30)
FILE_PROOF_LIFETIME = timedelta(days=30)


class ProofError(DomainError):
    """Raised when a desk has not (or not correctly) proven that it holds its key."""


def answer_hash(answer: str) -> str:
    """What is stored of an expected challenge answer: its SHA-256, so that reading the
    database does not give the answer away."""
    return hashlib.sha256(answer.encode("utf-8")).hexdigest()


def desk_public_key(user: User, key_id: str, *, keyring: Keyring) -> crypto.PublicKey:
    """The public key with this id that ``user``'s desk may hold (checked by the caller)."""
    for key in keyring.recipients:
        if user.role == "organizer" and key.key_id_hex == key_id:
            return key
    row = db.session.get(RecipientKey, key_id)
    if row is None or row.owner_id != user.id:
        raise ProofError(N_("The desk's key is not registered for this account."))
    return crypto.PublicKey.from_bytes(row.public_key)


def _token_hash(key_id: str, answer: str) -> str:
    """What is stored of an expected token answer: bound to the key the challenge was for."""
    return answer_hash(f"{key_id}:{answer}")


def issue_token_challenge(token: ApiToken, public_key: crypto.PublicKey) -> bytes:
    """A challenge for the token's desk (committed; replaces an earlier one)."""
    blob, answer = crypto.new_possession_challenge(public_key)
    token.proof_hash = _token_hash(public_key.key_id_hex, answer)
    db.session.commit()
    return blob


def answer_token_challenge(token: ApiToken, answer: str, *, key_id: str) -> None:
    """Mark the token proven for the key ``key_id`` if ``answer`` is right (one attempt per
    challenge; committed)."""
    expected = token.proof_hash
    token.proof_hash = None
    if expected is None or not hmac.compare_digest(_token_hash(key_id, answer), expected):
        db.session.commit()
        raise ProofError(N_("The desk could not prove it holds its key."))
    token.proven_until = now() + TOKEN_PROOF_LIFETIME
    token.proven_key_id = key_id
    db.session.commit()


def require_proven_token(token: ApiToken, *, key_id: str) -> None:
    """Refuse changes from a token whose desk has not recently proven it holds ``key_id``."""
    if (
        token.proven_until is None
        or as_utc(token.proven_until) < now()
        or token.proven_key_id != key_id
    ):
        raise ProofError(N_("The desk must prove it holds its key first."))


def issue_file_challenge(user: User, public_key: crypto.PublicKey) -> bytes:
    """A challenge for the bundle file being made (within the caller's transaction)."""
    blob, answer = crypto.new_possession_challenge(public_key)
    user.bundle_proof = json.dumps(
        {
            "hash": answer_hash(answer),
            "key_id": public_key.key_id_hex,
            "expires": (now() + FILE_PROOF_LIFETIME).isoformat(),
        }
    )
    return blob


def check_file_proof(user: User, *, key_id: str, answer: object) -> None:
    """Refuse an outputs file that does not answer the user's last bundle file challenge."""
    if not user.bundle_proof or not isinstance(answer, str):
        raise ProofError(
            N_(
                "The outputs file does not answer the challenge of your last case bundle. "
                "Download a fresh case bundle, load it on the desk, and export the changes again."
            )
        )
    record = json.loads(user.bundle_proof)
    fresh = now() <= datetime.fromisoformat(record["expires"])
    if not (
        fresh
        and record["key_id"] == key_id
        and hmac.compare_digest(answer_hash(answer), record["hash"])
    ):
        raise ProofError(
            N_(
                "The outputs file does not prove the desk holds its key. Download a fresh case "
                "bundle, load it on the desk, and export the changes again."
            )
        )
