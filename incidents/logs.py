"""Logging without personal data: no request lines, IP addresses, User-Agents or form data.

The development server's request lines (which carry the client address and query string) are
dropped; gunicorn runs with its access log off (see ``docs/deployment.md``). Application log
records say what happened to the service, never what a witness wrote.
"""

from __future__ import annotations

import logging

from flask import Flask

_REQUEST_LINE_MARKER = " - - ["
# Libraries that read witnesses' files and log what they read at DEBUG: Pillow prints every
# EXIF tag of an image header (GPS position, camera serial, comments) when it opens one.
_CONTENT_LOGGERS = ("PIL", "pillow_heif")


class DropRequestLines(logging.Filter):
    """Drop werkzeug's per-request access lines, which contain the client address."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Return False for access-log records, True for everything else."""
        return _REQUEST_LINE_MARKER not in str(record.msg)


def configure_logging(app: Flask, *, level: str) -> None:
    """Set the application log level and strip request lines from the development server.

    Loggers of libraries that parse evidence files stay at WARNING whatever the level, so that
    a DEBUG log of the process never holds a photo's metadata.
    """
    app.logger.setLevel(level)
    for name in _CONTENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    werkzeug_logger = logging.getLogger("werkzeug")
    if not any(isinstance(f, DropRequestLines) for f in werkzeug_logger.filters):
        werkzeug_logger.addFilter(DropRequestLines())
