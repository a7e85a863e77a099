"""Unit labels: a GS1 DataMatrix beside the human-readable text, as PNG or PDF bytes.

Geometry: 100 × 50 mm, DataMatrix module (X-dimension) about 0.5 mm, inside GS1's range
for healthcare items (0.255-0.615 mm); PNG at 300 dpi. Text that does not fit, or a character
the label fonts cannot print, is refused rather than cut or replaced: a label must say all of
what it was given.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any, Literal, cast

import zxingcpp
from PIL import Image, ImageDraw, ImageFont, ImageOps
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas

from nearfab.common.errors import ValidationFailed
from nearfab.custody.gs1 import UnitIdentifier, scan_elements

LABEL_MM = (100.0, 50.0)
DPI = 300
MODULE_MM = 0.5
QUIET_MODULES = 2
_MARGIN_MM = 2.5
_GAP_MM = 3.0
_SIZES_PT = (8.0, 7.5, 7.0, 6.5, 6.0)  # no smaller: the label must stay legible
_LEADING = 1.22
_PRODUCT_SCALE = 1.2
_MAX_UPLOAD_PIXELS = 40_000_000


@dataclass(frozen=True)
class LabelContent:
    """What a unit label says besides its DataMatrix."""

    identifier: UnitIdentifier
    product_name: str
    dose_text: str
    patient_ref: str
    storage: str
    status_note: str = ""
    # the family's lines after the dose line (custody.kit.label_details), e.g. an identity under
    # the family's own scheme
    details: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.identifier, UnitIdentifier):
            raise ValidationFailed("identifier must be a UnitIdentifier.", field="identifier")
        if not isinstance(self.details, tuple):
            raise ValidationFailed("details must be a tuple of lines.", field="details")
        for index, line in enumerate(self.details):
            field = f"details[{index}]"
            if not isinstance(line, str) or not line.strip():
                raise ValidationFailed(f"{field} must be text, not empty.", field=field)
            for ch in line:
                if not _printable(ch):
                    raise ValidationFailed(
                        f"{field} contains {ch!r}, which the label fonts cannot print.",
                        field=field,
                    )
        for f in fields(self):
            if f.name in ("identifier", "details"):
                continue
            value = getattr(self, f.name)
            if not isinstance(value, str):
                raise ValidationFailed(f"{f.name} must be text.", field=f.name)
            if f.name != "status_note" and not value.strip():
                raise ValidationFailed(f"{f.name} must not be empty.", field=f.name)
            for ch in value:
                if not _printable(ch):
                    raise ValidationFailed(
                        f"{f.name} contains {ch!r}, which the label fonts cannot print.",
                        field=f.name,
                    )


# --- DataMatrix ---------------------------------------------------------------------------


def _gs1_datamatrix(data: str) -> Any:
    """The zxing-cpp barcode object of a GS1 DataMatrix (FNC1 first, square, ECC 200)."""
    try:
        elements = scan_elements("]d2" + data)
    except ValidationFailed as exc:
        raise ValidationFailed(f"DataMatrix data: {exc.message}", field="data") from exc
    # zxing-cpp encodes GS1 through zint from GS1 bracketed syntax; square brackets, because
    # "(" and ")" are valid data characters (CSET 82) while "[" and "]" are not.
    content = "".join(f"[{ai}]{value}" for ai, value in elements)
    try:
        barcode = zxingcpp.create_barcode(
            content, zxingcpp.BarcodeFormat.DataMatrix, gs1=True, force_square=True
        )
    except ValueError as exc:
        raise ValidationFailed(f"DataMatrix cannot encode the data: {exc}", field="data") from exc
    if barcode.content_type != zxingcpp.ContentType.GS1 or barcode.symbology_identifier != "]d2":
        raise ValidationFailed("encoder did not produce a GS1 DataMatrix.", field="data")
    return barcode


def datamatrix_image(data: str, *, module_px: int = 6) -> Image.Image:
    """A GS1 DataMatrix (FNC1 first, square) of element data in `datamatrix_data()` form.

    Returns an "L" image with a quiet zone of two modules on every side.
    """
    if isinstance(module_px, bool) or not isinstance(module_px, int) or not 1 <= module_px <= 50:
        raise ValidationFailed("module_px must be an integer from 1 to 50.", field="module_px")
    barcode = _gs1_datamatrix(data)
    bitmap = zxingcpp.write_barcode_to_image(barcode, scale=module_px, add_quiet_zones=False)
    height, width = bitmap.shape
    # zxingcpp.Image exposes the 8-bit grey pixels through the buffer protocol.
    image = Image.frombytes("L", (width, height), bytes(memoryview(cast(Any, bitmap))))
    return ImageOps.expand(image, border=QUIET_MODULES * module_px, fill=255)


def datamatrix_svg(data: str) -> str:
    """The same GS1 DataMatrix as scalable vector graphics (one unit per module, with the
    quiet zone), for labels printed by other software at any size."""
    return str(zxingcpp.write_barcode_to_svg(_gs1_datamatrix(data)))


def decode_datamatrix(image_bytes: bytes) -> str:
    """The GS1 content of the DataMatrix in an image, as "]d2" + data with GS separators.

    A non-GS1 DataMatrix holding a Digital Link URI gives the URI. Both forms suit `parse_scan`.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(image_bytes)) as opened:
                if opened.width * opened.height > _MAX_UPLOAD_PIXELS:
                    raise ValidationFailed("image is too large.", field="image")
                if "A" in opened.getbands():  # transparent background: put it on white
                    flat = Image.new("RGBA", opened.size, (255, 255, 255, 255))
                    flat.alpha_composite(opened.convert("RGBA"))
                    image = flat.convert("L")
                else:
                    image = opened.convert("L")
    except ValidationFailed:
        raise
    except (
        OSError,
        ValueError,
        TypeError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ):
        raise ValidationFailed("not a readable image.", field="image") from None
    found = zxingcpp.read_barcodes(
        image,
        formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.DataMatrix),
        text_mode=zxingcpp.TextMode.Plain,
    )
    contents: set[str] = set()
    for barcode in found:
        if not barcode.valid:
            continue
        if barcode.content_type == zxingcpp.ContentType.GS1:
            contents.add(barcode.symbology_identifier + barcode.text)
        elif barcode.text.lower().startswith(("http://", "https://")):
            contents.add(barcode.text)
        else:
            contents.add("")  # a DataMatrix without GS1 data
    if not contents:
        raise ValidationFailed("no DataMatrix found in the image.", field="image")
    if len(contents) > 1:
        raise ValidationFailed("the image holds more than one DataMatrix.", field="image")
    content = contents.pop()
    if not content:
        raise ValidationFailed("the DataMatrix does not carry GS1 data.", field="image")
    return content


# --- text layout ----------------------------------------------------------------------------


def _lines(content: LabelContent) -> list[tuple[str, bool]]:
    """(text, is_product_line) in print order."""
    ident = content.identifier
    lines = [
        (content.product_name, True),
        (content.dose_text, False),
        *((line, False) for line in content.details),
        (f"Patient: {content.patient_ref}", False),
        (f"GTIN: {ident.gtin}", False),
        (f"Batch: {ident.batch}", False),
        (f"Expiry: {ident.expiry.isoformat()}", False),
        (f"Serial: {ident.serial}", False),
        (content.storage, False),
    ]
    if content.status_note.strip():
        lines.append((content.status_note, False))
    return lines


Measure = Callable[[str, float, bool], float]


def _wrap(text: str, size: float, bold: bool, width: float, measure: Measure) -> list[str]:
    """Word-wrap to `width`; a word wider than the line is broken between characters."""
    out: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if measure(candidate, size, bold) <= width:
            line = candidate
            continue
        if line:
            out.append(line)
        line = ""
        for ch in word:
            if line and measure(line + ch, size, bold) > width:
                out.append(line)
                line = ""
            line += ch
    if line:
        out.append(line)
    return out


def _layout(
    content: LabelContent, width: float, height: float, measure: Measure
) -> tuple[float, list[tuple[str, float, bool]]]:
    """Largest font size (pt) at which all text fits; lines as (text, size, bold)."""
    for size in _SIZES_PT:
        placed: list[tuple[str, float, bool]] = []
        for text, product in _lines(content):
            line_size = size * _PRODUCT_SCALE if product else size
            placed += [
                (t, line_size, product) for t in _wrap(text, line_size, product, width, measure)
            ]
        if sum(s * _LEADING for _, s, _ in placed) <= height:
            return size, placed
    raise ValidationFailed(
        "label text does not fit on a 100 × 50 mm label; shorten it.", field="content"
    )


# --- fonts -------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _pil_font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=px)


@lru_cache(maxsize=512)
def _printable(ch: str) -> bool:
    """Both label fonts have a glyph: Pillow's bundled default and reportlab's Helvetica."""
    if " " <= ch <= "~":
        return True
    if not ch.isprintable():
        return False
    try:
        ch.encode("cp1252")  # reportlab's standard fonts use WinAnsi encoding
    except UnicodeEncodeError:
        return False
    return _glyph(ch) != _glyph("\uffff")


@lru_cache(maxsize=512)
def _glyph(ch: str) -> bytes:
    font = _pil_font(40)
    image = Image.new("L", (60, 60), 0)
    ImageDraw.Draw(image).text((5, 5), ch, font=font, fill=255)
    return image.tobytes()


# --- rendering ---------------------------------------------------------------------------------


def _px(mm_value: float) -> int:
    return round(mm_value / 25.4 * DPI)


def _render_png(content: LabelContent, symbol: Image.Image, module_px: int) -> bytes:
    width_mm, height_mm = LABEL_MM
    canvas = Image.new("L", (_px(width_mm), _px(height_mm)), 255)
    margin = _px(_MARGIN_MM)
    canvas.paste(symbol, (margin, (canvas.height - symbol.height) // 2))
    text_x = margin + symbol.width + _px(_GAP_MM) - QUIET_MODULES * module_px
    text_width = canvas.width - margin - text_x
    text_height = canvas.height - 2 * margin

    def measure(text: str, size: float, bold: bool) -> float:
        return float(_pil_font(_pt_px(size)).getlength(text))

    # Widths in pixels, font sizes and heights in points.
    _, lines = _layout(content, text_width, text_height * 72 / DPI, measure)
    draw = ImageDraw.Draw(canvas)
    total = sum(_pt_px(s * _LEADING) for _, s, _ in lines)
    y = (canvas.height - total) // 2
    for text, size, bold in lines:
        draw.text((text_x, y), text, font=_pil_font(_pt_px(size)), fill=0)
        if bold:  # the bundled font has no bold face: overstrike by one pixel
            draw.text((text_x + 1, y), text, font=_pil_font(_pt_px(size)), fill=0)
        y += _pt_px(size * _LEADING)
    out = io.BytesIO()
    canvas.save(out, format="PNG", dpi=(DPI, DPI))
    return out.getvalue()


def _pt_px(points: float) -> int:
    return max(1, round(points * DPI / 72))


def _render_pdf(content: LabelContent, symbol: Image.Image, modules: int) -> bytes:
    width_mm, height_mm = LABEL_MM
    out = io.BytesIO()
    pdf = Canvas(out, pagesize=(width_mm * mm, height_mm * mm), invariant=1, pageCompression=0)
    pdf.setTitle(f"Unit label {content.identifier.serial}")
    pdf.setCreator("nearfab")
    side = modules * MODULE_MM * mm
    margin = _MARGIN_MM * mm
    pdf.drawImage(ImageReader(symbol), margin, (height_mm * mm - side) / 2, width=side, height=side)
    text_x = margin + side + (_GAP_MM - QUIET_MODULES * MODULE_MM) * mm
    text_width = width_mm * mm - margin - text_x
    text_height = height_mm * mm - 2 * margin

    def measure(text: str, size: float, bold: bool) -> float:
        return float(stringWidth(text, "Helvetica-Bold" if bold else "Helvetica", size))

    _, lines = _layout(content, text_width, text_height, measure)
    total = sum(s * _LEADING for _, s, _ in lines)
    y = (height_mm * mm + total) / 2
    for text, size, bold in lines:
        y -= size * _LEADING
        pdf.setFont("Helvetica-Bold" if bold else "Helvetica", size)
        pdf.drawString(text_x, y + (_LEADING - 1) * size, text)
    pdf.showPage()
    pdf.save()
    return out.getvalue()


def render_label(content: LabelContent, fmt: Literal["png", "pdf"]) -> bytes:
    """The label as PNG (300 dpi, Pillow) or PDF (100 × 50 mm page, reportlab) bytes."""
    if fmt not in ("png", "pdf"):
        raise ValidationFailed(f"label format must be 'png' or 'pdf', not {fmt!r}.", field="fmt")
    if not isinstance(content, LabelContent):
        raise ValidationFailed("content must be a LabelContent.", field="content")
    module_px = _pt_px(MODULE_MM / 25.4 * 72)  # 0.5 mm at 300 dpi: 6 px
    symbol = datamatrix_image(content.identifier.datamatrix_data(), module_px=module_px)
    if fmt == "png":
        return _render_png(content, symbol, module_px)
    return _render_pdf(content, symbol, symbol.width // module_px)
