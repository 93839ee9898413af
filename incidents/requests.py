"""The application's request class: how form bodies are decoded.

Werkzeug 3 keeps undecodable bytes of a url-encoded body as literal "%XX" text (and drops the
whole form when raw bytes are not UTF-8), which the report form could not tell from typed text.
Here they become U+FFFD, which ``intake.forms.readable_text`` refuses next to the field, so a
witness gets a clear message and keeps the rest of the form.

Uploaded files are never spooled to a temporary file in clear (Werkzeug's default for anything
over 500 KiB): they are encrypted as they are parsed, see ``incidents.uploads``.
"""

from __future__ import annotations

import io
from typing import IO
from urllib.parse import parse_qsl

from flask import Request, current_app
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser

from incidents.uploads import current_batch


class ReadableFormDataParser(FormDataParser):
    """Decode url-encoded forms as Werkzeug decodes multipart ones: bad UTF-8 becomes U+FFFD.

    Werkzeug 3 keeps undecodable bytes of a url-encoded body as literal "%XX" text (and drops
    the whole form when raw bytes are not UTF-8), which the report form could not tell from
    typed text; U+FFFD is refused next to the field instead (``intake.forms.readable_text``).
    """

    def _parse_urlencoded(
        self,
        stream: IO[bytes],
        mimetype: str,
        content_length: int | None,
        options: dict[str, str],
    ) -> tuple[IO[bytes], MultiDict[str, str], MultiDict[str, FileStorage]]:
        """Parse a url-encoded body, decoding bad UTF-8 as U+FFFD."""
        if (
            self.max_form_memory_size is not None
            and content_length is not None
            and content_length > self.max_form_memory_size
        ):
            raise RequestEntityTooLarge()
        items = parse_qsl(
            stream.read().decode("utf-8", "replace"), keep_blank_values=True, errors="replace"
        )
        return stream, self.cls(items), self.cls()


EVIDENCE_ENDPOINTS = frozenset({"intake.submit", "intake.followup_add"})
"""Endpoints where witnesses send files: those are sealed while parsed, with a larger limit."""
EVIDENCE_LIMIT_CONFIG = "INCIDENTS_MAX_EVIDENCE_REQUEST"


class ReadableRequest(Request):
    """The request class of the app: readable url-encoded forms, uploads sealed as they arrive.

    Every other upload (a staff member's public key or key grant file) stays in memory, under
    the ordinary form limit; nothing is ever spooled to a temporary file.
    """

    form_data_parser_class = ReadableFormDataParser

    @property
    def max_content_length(self) -> int | None:
        """The form limit, or the evidence limit on the endpoints that accept witness files."""
        if self._max_content_length is None and self.endpoint in EVIDENCE_ENDPOINTS:
            limit: int = current_app.config[EVIDENCE_LIMIT_CONFIG]
            return limit
        return super().max_content_length

    @max_content_length.setter
    def max_content_length(self, value: int | None) -> None:
        """Set a limit for this request that replaces the configured ones."""
        self._max_content_length = value

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        """Never spool an upload to disk: seal evidence while it is parsed, keep the rest in RAM."""
        if self.endpoint not in EVIDENCE_ENDPOINTS:
            return io.BytesIO()
        batch = current_batch(create=True)
        if batch is None:
            raise RuntimeError("uploads are only parsed inside a request")
        return batch.open_upload(filename or "")  # type: ignore[return-value]
