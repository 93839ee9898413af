"""The application's request class: how form bodies are decoded.

Werkzeug 3 keeps undecodable bytes of a url-encoded body as literal "%XX" text (and drops the
whole form when raw bytes are not UTF-8), which the report form could not tell from typed text.
Here they become U+FFFD, which ``intake.forms.readable_text`` refuses next to the field, so a
witness gets a clear message and keeps the rest of the form.
"""

from __future__ import annotations

from typing import IO
from urllib.parse import parse_qsl

from flask import Request
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser


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


class ReadableRequest(Request):
    """The request class of the app: forms are parsed by ``ReadableFormDataParser``."""

    form_data_parser_class = ReadableFormDataParser
