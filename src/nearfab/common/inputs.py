"""Small, domain-free checks shared by the input schemas (`<Thing>In`) of several domains."""

from __future__ import annotations


def nonempty_text(v: str) -> str:
    """A pydantic field validator: the text stripped, refused when nothing is left (pydantic
    reports the ValueError against the field, which the services turn into a 422)."""
    v = v.strip()
    if not v:
        raise ValueError("must not be empty")
    return v
