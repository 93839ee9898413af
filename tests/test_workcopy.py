"""Working copies of images: metadata gone, pixels kept."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from incidents.workcopy import WorkingCopyError, strip_image


def png_bytes(image: Image.Image, **params: object) -> bytes:
    """Encode an image as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def test_a_palette_png_keeps_its_colours() -> None:
    original = Image.new("P", (4, 4))
    original.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    original.putpixel((1, 1), 1)
    copy = strip_image(png_bytes(original), media_type="image/png")
    with Image.open(io.BytesIO(copy.data)) as result:
        assert result.convert("RGB").getpixel((1, 1)) == (0, 200, 0)
        assert result.convert("RGB").getpixel((0, 0)) == (0, 0, 0)


def test_png_text_and_exif_chunks_are_dropped() -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "TRACEABLE-NAME")
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"  # Make
    data = png_bytes(Image.new("RGB", (8, 8), "red"), pnginfo=info, exif=exif)
    assert b"TRACEABLE-NAME" in data
    assert b"CameraMaker" in data

    copy = strip_image(data, media_type="image/png")

    assert b"TRACEABLE-NAME" not in copy.data
    assert b"CameraMaker" not in copy.data
    with Image.open(io.BytesIO(copy.data)) as result:
        assert result.size == (8, 8)
        assert not result.getexif()


def test_a_jpeg_is_turned_upright_before_its_orientation_tag_is_dropped() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), "blue").save(buffer, format="JPEG", exif=exif)

    copy = strip_image(buffer.getvalue(), media_type="image/jpeg")

    with Image.open(io.BytesIO(copy.data)) as result:
        assert result.size == (20, 40)
        assert not result.getexif()


def test_no_working_copy_is_pretended_for_a_pdf() -> None:
    with pytest.raises(WorkingCopyError, match=r"evidence\.md"):
        strip_image(b"%PDF-1.4\n%%EOF\n", media_type="application/pdf")
