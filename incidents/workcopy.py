"""Working copies of evidence with identifying metadata removed (run off the server).

The original file stays the evidence (its SHA-256 is sealed with it). A working copy is what may
be shared: for images (JPEG, PNG, WebP, HEIC) the pixels are re-encoded into a fresh image after
applying the EXIF orientation, so EXIF (GPS position, time, camera make and serial), XMP, IPTC,
ICC profiles, comments and embedded thumbnails are all dropped. Other types are not rewritten:
see ``docs/evidence.md`` for what remains in PDF, audio and video and how to clean them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

IMAGE_FORMATS = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WEBP",
    "image/heic": "JPEG",
}
MAX_WORKING_COPY_PIXELS = 120_000_000


class WorkingCopyError(Exception):
    """Raised when no metadata-free working copy can be made for a file."""


@dataclass(frozen=True)
class WorkingCopy:
    """A metadata-free copy of an image."""

    data: bytes


def _target_mode(mode: str, target_format: str) -> str:
    """A mode that keeps the colours without a palette (a fresh image has none to copy)."""
    if target_format == "JPEG":
        return "L" if mode in ("1", "L") else "RGB"
    has_alpha = mode in ("RGBA", "LA", "PA", "P") or mode.endswith("A")
    return "RGBA" if has_alpha else ("L" if mode in ("1", "L") else "RGB")


def strip_image(data: bytes, *, media_type: str) -> WorkingCopy:
    """Re-encode an image's pixels only; raise WorkingCopyError for other types or bad images."""
    if media_type not in IMAGE_FORMATS:
        raise WorkingCopyError(
            f"no working copy can be made of {media_type} files; see docs/evidence.md"
        )
    from PIL import Image, ImageOps

    if media_type == "image/heic":
        import pillow_heif

        pillow_heif.register_heif_opener()
    target_format = IMAGE_FORMATS[media_type]
    Image.MAX_IMAGE_PIXELS = MAX_WORKING_COPY_PIXELS
    try:
        with Image.open(io.BytesIO(data)) as original:
            oriented = ImageOps.exif_transpose(original)
            pixels = oriented.convert(_target_mode(oriented.mode, target_format))
            clean = Image.new(pixels.mode, pixels.size)
            clean.paste(pixels)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise WorkingCopyError(f"the image could not be read: {exc}") from exc
    out = io.BytesIO()
    options = {"quality": 92} if target_format in ("JPEG", "WEBP") else {}
    clean.save(out, format=target_format, **options)
    return WorkingCopy(data=out.getvalue())
