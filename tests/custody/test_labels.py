"""Unit labels: GS1 DataMatrix encoding, PNG/PDF rendering, and reading the symbol back."""

from __future__ import annotations

import io
from datetime import date
from typing import Any, cast

import pytest
import zxingcpp
from PIL import Image

from nearfab.common.errors import ValidationFailed
from nearfab.custody.gs1 import GS, UnitIdentifier, make_identifier, new_serial, parse_scan
from nearfab.custody.labels import (
    LabelContent,
    datamatrix_image,
    datamatrix_svg,
    decode_datamatrix,
    render_label,
)

GTIN = "09506000134352"

IDENTIFIERS = [
    make_identifier(GTIN, "ABC123", "B123", date(2026, 12, 31)),
    make_identifier(GTIN, "ABCDEFGHJK2345678912", "B" * 20, date(2027, 6, 30)),  # max lengths
    make_identifier(GTIN, new_serial(20), "LOT-26/11.A+(2)", date(2028, 2, 29)),
    make_identifier("02345673", "x!\"%&'()*+,-./:;<=>?", "_z'9:;<=>?%&", date(2030, 1, 1)),
]


def _unit_id(unit: UnitIdentifier) -> str:
    """The serial, except for the random one (pytest-xdist workers must collect the same ids)."""
    return "random" if unit is IDENTIFIERS[2] else unit.serial


def _content(unit: UnitIdentifier, **overrides: str) -> LabelContent:
    fields = {
        "product_name": "Hydrocortisone 2.5 mg printlet",
        "dose_text": "2.5 mg, one tablet three times daily",
        "patient_ref": "PT-7F3K-22",
        "storage": "Store below 25 °C in the original container",
        "status_note": "",
    }
    fields.update(overrides)
    return LabelContent(identifier=unit, **fields)


@pytest.mark.parametrize("unit", IDENTIFIERS, ids=_unit_id)
def test_png_label_round_trip(unit: UnitIdentifier) -> None:
    png = render_label(_content(unit), "png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    scanned = decode_datamatrix(png)
    assert scanned == "]d2" + unit.datamatrix_data()
    assert parse_scan(scanned) == unit


def test_png_label_geometry() -> None:
    png = render_label(_content(IDENTIFIERS[0], status_note="Quarantine"), "png")
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (1181, 591)  # 100 x 50 mm at 300 dpi
        assert round(image.info["dpi"][0]) == 300
        # DataMatrix on the left: dark pixels in the left fifth, none in the margin.
        left = image.convert("L").crop((0, 0, 236, 591))
        assert left.getextrema() == (0, 255)
        assert image.convert("L").crop((0, 0, 20, 591)).getextrema() == (255, 255)


def test_datamatrix_is_gs1_with_fnc1_first() -> None:
    unit = IDENTIFIERS[2]
    image = datamatrix_image(unit.datamatrix_data(), module_px=4)
    assert image.mode == "L"
    assert image.width == image.height  # square symbol
    # Quiet zone of at least one module (here two) on every side.
    w, h = image.size
    for box in ((0, 0, w, 8), (0, h - 8, w, h), (0, 0, 8, h), (w - 8, 0, w, h)):
        assert image.crop(box).getextrema() == (255, 255)
    (barcode,) = zxingcpp.read_barcodes(image, text_mode=zxingcpp.TextMode.Plain)
    assert barcode.format == zxingcpp.BarcodeFormat.DataMatrix
    assert barcode.content_type == zxingcpp.ContentType.GS1
    assert barcode.symbology_identifier == "]d2"
    assert barcode.text == unit.datamatrix_data()
    (hri,) = zxingcpp.read_barcodes(image)  # default text mode HRI: bracketed
    assert hri.text == unit.element_string().replace("\\(", "(")


def test_datamatrix_module_size() -> None:
    data = IDENTIFIERS[0].datamatrix_data()
    small, large = datamatrix_image(data, module_px=2), datamatrix_image(data, module_px=6)
    assert large.width == 3 * small.width


@pytest.mark.parametrize(
    "data",
    [
        "",
        "hello",
        "0109506000134353",  # check digit
        "0109506000134352" + "10B~1",  # outside CSET 82
        "0109506000134352" + "17261332",  # no month 13
    ],
)
def test_datamatrix_refuses_invalid_data(data: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        datamatrix_image(data)
    assert caught.value.field == "data"


@pytest.mark.parametrize("module_px", [0, -1, 51, True])
def test_datamatrix_refuses_bad_module_size(module_px: int) -> None:
    with pytest.raises(ValidationFailed) as caught:
        datamatrix_image(IDENTIFIERS[0].datamatrix_data(), module_px=module_px)
    assert caught.value.field == "module_px"


def test_pdf_label_holds_the_text() -> None:
    unit = make_identifier(GTIN, "SER-0001", "LOT-26/11.A", date(2027, 3, 31))
    pdf = render_label(_content(unit, status_note="Released 2026-11-20"), "pdf")
    assert pdf.startswith(b"%PDF")
    assert pdf.rstrip().endswith(b"%%EOF")
    for text in (
        "Hydrocortisone 2.5 mg printlet",
        "2.5 mg, one tablet three times daily",
        "PT-7F3K-22",
        GTIN,
        "LOT-26/11.A",
        "2027-03-31",
        "SER-0001",
        "Released 2026-11-20",
    ):
        assert text.encode() in pdf, text
    assert b"(Store below 25 \\260C in the original container) Tj" in pdf  # WinAnsi octal
    assert b"/Subtype /Image" in pdf
    assert b"/MediaBox [ 0 0 283.4646 141.7323 ]" in pdf  # 100 x 50 mm
    assert render_label(_content(unit), "pdf") == render_label(_content(unit), "pdf")


def test_long_text_wraps_and_still_decodes() -> None:
    unit = IDENTIFIERS[1]
    content = _content(
        unit,
        dose_text="2.5 mg, one tablet three times daily with food; do not crush or chew; "
        "if a dose is missed take it as soon as remembered",
        patient_ref="P" * 60,
    )
    for fmt in ("png", "pdf"):
        assert render_label(content, fmt)
    assert parse_scan(decode_datamatrix(render_label(content, "png"))) == unit


def test_text_that_cannot_fit_is_refused() -> None:
    content = _content(IDENTIFIERS[0], dose_text="one tablet daily " * 150)
    for fmt in ("png", "pdf"):
        with pytest.raises(ValidationFailed) as caught:
            render_label(content, fmt)
        assert caught.value.field == "content"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("product_name", ""),
        ("dose_text", "   "),
        ("patient_ref", ""),
        ("storage", ""),
        ("dose_text", "50 µg daily"),  # no glyph in Pillow's bundled font: write "micrograms"
        ("product_name", "Café tablet"),
        ("storage", "Store ≤ 25 °C"),
        ("patient_ref", "PT\n22"),
        ("status_note", "\x1b[31m"),
    ],
)
def test_label_content_refusals_name_the_field(field: str, value: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        _content(IDENTIFIERS[0], **{field: value})
    assert caught.value.field == field


def test_label_content_needs_an_identifier() -> None:
    with pytest.raises(ValidationFailed) as caught:
        LabelContent("(01)09506000134352", "P", "D", "R", "S")  # type: ignore[arg-type]
    assert caught.value.field == "identifier"


def test_render_label_refuses_unknown_format() -> None:
    with pytest.raises(ValidationFailed) as caught:
        render_label(_content(IDENTIFIERS[0]), "svg")  # type: ignore[arg-type]
    assert caught.value.field == "fmt"


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _plain_datamatrix(text: str) -> Image.Image:
    barcode = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.DataMatrix)
    bitmap = zxingcpp.write_barcode_to_image(barcode, scale=6)
    height, width = bitmap.shape
    return Image.frombytes("L", (width, height), bytes(memoryview(cast(Any, bitmap))))


def test_decode_reads_a_digital_link_in_a_plain_datamatrix() -> None:
    unit = IDENTIFIERS[0]
    scanned = decode_datamatrix(_png(_plain_datamatrix(unit.digital_link())))
    assert scanned == unit.digital_link()
    assert parse_scan(scanned) == unit


def test_decode_reads_a_transparent_png() -> None:
    unit = IDENTIFIERS[0]
    symbol = datamatrix_image(unit.datamatrix_data())
    rgba = Image.new("RGBA", symbol.size, (0, 0, 0, 0))  # transparent black background
    rgba.putalpha(symbol.point(lambda v: 255 - v))  # dark modules opaque
    assert parse_scan(decode_datamatrix(_png(rgba))) == unit


def test_decode_reads_jpeg_and_rotated_symbols() -> None:
    unit = IDENTIFIERS[3]
    image = datamatrix_image(unit.datamatrix_data()).rotate(90, expand=True)
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=90)
    assert parse_scan(decode_datamatrix(out.getvalue())) == unit


@pytest.mark.parametrize(
    ("image_bytes", "reason"),
    [
        (b"", "not a readable image"),
        (b"%PDF-1.4 not an image", "not a readable image"),
        (_png(Image.new("L", (200, 200), 255)), "no DataMatrix"),
        (_png(_plain_datamatrix("just text")), "not carry GS1"),
        (_png(_plain_datamatrix("(01)09506000134352(21)ABC")), "not carry GS1"),
        (_png(_plain_datamatrix("]d20109506000134352")), "not carry GS1"),
    ],
)
def test_decode_refusals(image_bytes: bytes, reason: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        decode_datamatrix(image_bytes)
    assert caught.value.field == "image"
    assert reason in caught.value.message


def test_decode_refuses_two_different_symbols() -> None:
    a = datamatrix_image(IDENTIFIERS[0].datamatrix_data())
    b = datamatrix_image(IDENTIFIERS[1].datamatrix_data())
    sheet = Image.new("L", (a.width + b.width + 60, max(a.height, b.height) + 40), 255)
    sheet.paste(a, (20, 20))
    sheet.paste(b, (a.width + 40, 20))
    with pytest.raises(ValidationFailed) as caught:
        decode_datamatrix(_png(sheet))
    assert "more than one" in caught.value.message


def test_decoded_data_uses_gs_not_brackets() -> None:
    unit = make_identifier(GTIN, "S(21)X", "B(10)Y", date(2026, 12, 31))
    scanned = decode_datamatrix(render_label(_content(unit), "png"))
    assert GS in scanned
    assert parse_scan(scanned) == unit


def _svg_modules(svg: str) -> tuple[int, set[tuple[int, int]]]:
    """Dark modules of zint's SVG (rectangles of modules drawn as `Mx yhWvHh-WZ`), and the
    symbol's width in modules."""
    import re

    width = int(re.search(r'<svg width="(\d+)"', svg).group(1))  # type: ignore[union-attr]
    dark = {
        (int(x) + i, int(y) + j)
        for x, y, w, h in re.findall(r"M(\d+) (\d+)h(\d+)v(\d+)h-\d+Z", svg)
        for i in range(int(w))
        for j in range(int(h))
    }
    return width, dark


@pytest.mark.parametrize("unit", IDENTIFIERS, ids=_unit_id)
def test_svg_symbol_has_the_same_modules_as_the_png(unit: UnitIdentifier) -> None:
    data = unit.datamatrix_data()
    width, dark = _svg_modules(datamatrix_svg(data))
    image = datamatrix_image(data, module_px=1)
    quiet = 2  # datamatrix_image's quiet zone, in modules
    size = image.size[0] - 2 * quiet
    assert width == size + 2  # zint's SVG keeps a quiet zone of one module
    png_dark = {
        (x - quiet + 1, y - quiet + 1)
        for y in range(image.size[1])
        for x in range(image.size[0])
        if image.getpixel((x, y)) < 128
    }
    assert dark and dark == png_dark
