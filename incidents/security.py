"""HTTP response headers that every page carries.

Strict CSP with no inline script or style and no external origin (DESIGN S10), a referrer only
to this site itself (Flask-WTF checks it on HTTPS; no other site ever learns a page address),
no framing, no caching of anything but static assets (``Cache-Control: no-store``), and HSTS in
production.
"""

from __future__ import annotations

from flask import Flask, Response, request

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"


def register_security_headers(app: Flask, *, is_production: bool | None = None) -> None:
    """Add the security headers to every response of ``app`` (the server's or the desk's)."""
    if is_production is None:
        is_production = bool(app.extensions["incidents.settings"].is_production)

    @app.after_request
    def add_security_headers(response: Response) -> Response:
        """Set CSP, framing, referrer, caching and (in production) HSTS headers."""
        headers = response.headers
        headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        headers["X-Content-Type-Options"] = "nosniff"
        headers["X-Frame-Options"] = "DENY"
        headers["Referrer-Policy"] = "same-origin"
        headers["Permissions-Policy"] = PERMISSIONS_POLICY
        headers["Cross-Origin-Opener-Policy"] = "same-origin"
        headers["Cross-Origin-Resource-Policy"] = "same-origin"
        if request.endpoint != "static":
            headers["Cache-Control"] = "no-store, max-age=0"
            headers["Pragma"] = "no-cache"
        if is_production:
            headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
        return response
