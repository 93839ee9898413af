"""Smoke test of the intake journey (the full suite is in test_views.py)."""

from flask.testing import FlaskClient

from tests.factories import receipt_from, submit_report


def test_filing_a_report_shows_a_receipt(client: FlaskClient) -> None:
    response = submit_report(client)
    assert response.status_code == 200
    assert len(receipt_from(response)) == 34
