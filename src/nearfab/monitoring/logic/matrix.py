"""Read a numeric matrix (one sample per row) from text: whitespace- or comma-separated.

Blank lines and lines starting with ``#`` are skipped. A first line whose every field is
non-numeric is a header of variable names (not allowed with ``transpose``, where rows are
variables). Every other field must be a finite number; a bad field or a ragged row raises
`ValidationFailed` naming the file, the line and the column (both 1-based).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from nearfab.common.errors import ValidationFailed

FloatArray = npt.NDArray[np.float64]

__all__ = ["Table", "parse_matrix", "parse_table", "read_matrix", "read_table"]


@dataclass(frozen=True)
class Table:
    """A parsed matrix (samples × variables) and the header names, if the text had a header."""

    values: FloatArray
    names: tuple[str, ...] | None


def _fields(line: str) -> list[str]:
    if "," in line:
        return [f.strip() for f in line.split(",")]
    return line.split()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _slow_row(source: str, lineno: int, fields: list[str], field: str) -> FloatArray:
    """Field by field: the values, or an error naming the first field that is not a finite
    number (numpy's parser refused the row or found a non-finite value in it)."""
    values: list[float] = []
    for col, text in enumerate(fields, start=1):
        if not text:
            raise ValidationFailed(
                f"{source}, line {lineno}, column {col}: empty value", field=field
            )
        try:
            value = float(text)
        except ValueError:
            raise ValidationFailed(
                f"{source}, line {lineno}, column {col}: {text[:40]!r} is not a number",
                field=field,
            ) from None
        if not np.isfinite(value):
            raise ValidationFailed(
                f"{source}, line {lineno}, column {col}: {text!r} is not a finite number",
                field=field,
            )
        values.append(value)
    return np.array(values, dtype=np.float64)


def parse_table(
    text: str, *, source: str = "<text>", transpose: bool = False, field: str = "file"
) -> Table:
    """Parse `text` into a `Table`; with `transpose`, rows of the text are variables."""
    rows: list[FloatArray] = []
    names: tuple[str, ...] | None = None
    width = 0
    first_line = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = _fields(line)
        if not rows and names is None and not transpose and not any(map(_is_number, fields)):
            if any(not f for f in fields):
                _slow_row(source, lineno, fields, field)  # names the empty field
            names = tuple(fields)
            width, first_line = len(fields), lineno
            continue
        if width and len(fields) != width:
            where = "the header" if names is not None and not rows else f"line {first_line}"
            raise ValidationFailed(
                f"{source}, line {lineno}: {len(fields)} values, expected {width} as on {where}",
                field=field,
            )
        try:
            row = np.array(fields, dtype=np.float64)
        except ValueError:
            row = _slow_row(source, lineno, fields, field)
        if not np.isfinite(row).all():
            row = _slow_row(source, lineno, fields, field)
        if not width:
            width, first_line = len(fields), lineno
        rows.append(row)
    if not rows:
        raise ValidationFailed(f"{source}: no numeric rows", field=field)
    values = np.vstack(rows)
    if transpose:
        values = np.ascontiguousarray(values.T)
    return Table(values=values, names=names)


def parse_matrix(
    text: str, *, source: str = "<text>", transpose: bool = False, field: str = "file"
) -> FloatArray:
    """Parse `text` into a float64 matrix (samples × variables); a header line is dropped."""
    return parse_table(text, source=source, transpose=transpose, field=field).values


def read_table(path: str | Path, *, transpose: bool = False, field: str = "file") -> Table:
    """Read a matrix file into a `Table` (values and optional header names)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValidationFailed(f"{p}: no such file", field=field) from None
    except IsADirectoryError:
        raise ValidationFailed(f"{p}: is a directory, not a file", field=field) from None
    except UnicodeDecodeError:
        raise ValidationFailed(f"{p}: not a UTF-8 text file", field=field) from None
    except OSError as exc:
        raise ValidationFailed(f"{p}: cannot read ({exc.strerror})", field=field) from None
    return parse_table(text, source=str(p), transpose=transpose, field=field)


def read_matrix(path: str | Path, *, transpose: bool = False, field: str = "file") -> FloatArray:
    """Read a matrix file: float64, one sample per row (after `transpose`, if asked)."""
    return read_table(path, transpose=transpose, field=field).values
