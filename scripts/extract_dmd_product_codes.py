"""Extract the NHS dm+d product codes (VMP and AMP) nearfab's demo master files declare, with
their strength, from a maintained public source, into
`src/nearfab/families/solid_dose/codes/dmd.py`, and keep the rows used, unchanged, as the shipped
excerpt `src/nearfab/families/solid_dose/codes/sources/dmd-propranolol-tablets.csv`.

Never type a product code or a strength by hand: add the VMP to WANTED_VMPS (or pass it on the
command line) and run this script on the source file.

Source: the OpenCodelists dm+d codelist "Beta blocker medications"
(opensafely/beta-blocker-medications/5a9825d4), as committed in
github.com/opensafely/polypharmacy-deprescribing-dementia (MIT),
`codelists/opensafely-beta-blocker-medications.csv`. Its rows are dm+d VMPs and AMPs (columns
code, term, id, type, bnf_code), extracted by OpenCodelists from the NHSBSA dm+d release (Open
Government Licence). dm+d codes are SNOMED CT identifiers (UK drug extension): FHIR carries them
with the system http://snomed.info/sct.

The strength is read from the dm+d name, which the dm+d editorial policy writes as name,
strength, form ("Propranolol 10mg tablets"): a single ingredient, one strength in mg, microgram
or gram, and the form "tablets" or "capsules" (conventional release; "modified-release",
"gastro-resistant", "soluble", a concentration "/5ml" or two ingredients "A / B" are refused:
the strength per unit cannot be read this way, or is not a printed tablet's). An AMP's name is
its product name (generic or brand) and strength and form, then its supplier in brackets
("Propranolol 10mg tablets (Accord Healthcare Ltd)", "Inderal 10mg tablets (AstraZeneca UK
Ltd)").

An AMP belongs to the wanted VMP when its BNF code's generic equivalent is the VMP's BNF code
(BNF codes: characters 1-9 the chemical, 10-11 the product, 12-13 the strength and formulation,
14-15 the generic equivalent's strength and formulation; the generic equivalent is
chemical + "AA" + the last two characters twice). Its own name must state the VMP's strength
and form, or the script stops. Every code must be a valid SNOMED CT concept identifier (Verhoeff
check digit, concept partition 00 or 10), which catches identifiers damaged by a spreadsheet.

    python scripts/extract_dmd_product_codes.py SOURCE.csv [VMP_CODE ...]
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path
from pprint import pformat
from typing import Any

SNOMED = "http://snomed.info/sct"
CODES = Path(__file__).resolve().parent.parent / "src/nearfab/families/solid_dose/codes"
OUT = CODES / "dmd.py"
EXCERPT = CODES / "sources/dmd-propranolol-tablets.csv"
# the VMPs the demo master files declare (src/nearfab/demo.py): Propranolol 10mg and 40mg
# tablets (dm+d has no propranolol 20mg tablet)
WANTED_VMPS = ("318352004", "318353009")
SOURCE = {
    "name": "OpenCodelists dm+d codelist Beta blocker medications "
    "(opensafely/beta-blocker-medications/5a9825d4)",
    "url": "https://www.opencodelists.org/codelist/opensafely/beta-blocker-medications/5a9825d4/",
    "repository": "github.com/opensafely/polypharmacy-deprescribing-dementia",
    "commit": "a5958411bcbdd9bf8fe6ccfb7f25a4cf6abc0497",
    "path": "codelists/opensafely-beta-blocker-medications.csv",
    "blob": "2cb692335f126008ab20820c1979f3d7b42a11fa",
    "downloaded_at": "2025-09-16 13:31:55Z",
    "licence": "MIT (the repository); dm+d content: NHS Business Services Authority, Open "
    "Government Licence v3.0",
}
HEADER = ["code", "term", "id", "type", "bnf_code"]
_NAME = re.compile(
    r"^(?P<name>[A-Z][A-Za-z\-]*(?: [A-Z][A-Za-z\-]*)*) (?P<value>\d+(?:\.\d+)?)"
    r"(?P<unit>mg|microgram|gram) (?P<form>tablets|capsules)$"
)
_AMP = re.compile(r"^(?P<product>[^()]+?) \((?P<supplier>.+)\)$")
_SUBSEQUENT = "VMP subsequent to "
_UNITS = {"mg": "mg", "microgram": "ug", "gram": "g"}
_FORMS = {"tablets": "tablet", "capsules": "capsule"}

# Verhoeff check digit tables (SNOMED CT identifiers end in one)
_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]


def snomed_concept_id(code: str) -> bool:
    """A SNOMED CT concept identifier: 6 to 18 digits, no leading zero, concept partition (00
    short form, 10 long form: an extension such as the UK drug extension), and a valid Verhoeff
    check digit."""
    if not re.fullmatch(r"[1-9]\d{5,17}", code) or code[-3:-1] not in ("00", "10"):
        return False
    check = 0
    for i, digit in enumerate(reversed(code)):
        check = _D[check][_P[i % 8][int(digit)]]
    return check == 0


def strength(name: str) -> dict[str, Any]:
    """The product name, strength and unit of one unit of a dm+d VMP or AMP name."""
    amp = _AMP.match(name)
    product = amp["product"] if amp else name
    match = _NAME.match(product)
    if match is None:
        raise SystemExit(
            f"{name!r}: not a single-ingredient, fixed-strength conventional-release tablet or "
            "capsule named '<name> <strength><unit> tablets|capsules'; its strength per unit "
            "cannot be read"
        )
    return {
        "name": match["name"],
        "strength_value": float(match["value"]),
        "strength_unit": _UNITS[match["unit"]],
        "per": _FORMS[match["form"]],
    }


def generic_bnf(bnf_code: str) -> str:
    """The BNF code of a presentation's generic equivalent."""
    if not re.fullmatch(r"[0-9A-Z]{15}", bnf_code):
        return ""
    return bnf_code[:9] + "AA" + bnf_code[13:15] * 2


def _rows(text: str) -> list[tuple[str, dict[str, str]]]:
    """Each data line of the source, unchanged, with its fields."""
    lines = text.splitlines()
    header = next(csv.reader(lines[:1]))
    if header != HEADER:
        raise SystemExit(f"unexpected columns {header}: expected {HEADER}")
    out = []
    for line in lines[1:]:
        if line.strip():
            [fields] = csv.reader([line])
            out.append((line, dict(zip(HEADER, fields, strict=True))))
    return out


def extract(
    text: str, wanted: tuple[str, ...] = WANTED_VMPS
) -> tuple[list[dict[str, Any]], list[str]]:
    """The wanted VMPs and their AMPs, each with its strength, and the source lines used."""
    rows = _rows(text)
    vmps = {r["id"]: (line, r) for line, r in rows if r["type"] == "vmp"}
    missing = [c for c in wanted if c not in vmps]
    if missing:
        raise SystemExit(f"not VMPs of the source codelist: {', '.join(missing)}")
    products: list[dict[str, Any]] = []
    used: list[str] = []
    for code in wanted:
        line, vmp = vmps[code]
        of = strength(vmp["term"])
        # the VMP's current identifier, when dm+d gave it a new one: a row "VMP subsequent to
        # <code>" with the same BNF code (a feed may send either)
        later = [
            (c, vline, r)
            for c, (vline, r) in vmps.items()
            if r["term"] == f"{_SUBSEQUENT}{code}" and r["bnf_code"] == vmp["bnf_code"]
        ]
        same_bnf = {c for c, (_, r) in vmps.items() if r["bnf_code"] == vmp["bnf_code"]}
        if not vmp["bnf_code"] or same_bnf != {code, *(c for c, _, _ in later)}:
            raise SystemExit(f"VMP {code}: its BNF code does not name it alone ({same_bnf})")
        ingredient = of["name"].lower()
        products.append(_product(vmp, "dm+d VMP", ingredient, of, vmp=None))
        used.append(line)
        for _, vline, r in later:
            current = {**r, "term": vmp["term"]}  # its name is the VMP's it replaces
            products.append(_product(current, "dm+d VMP", ingredient, of, vmp=None, prev=code))
            used.append(vline)
        for amp_line, amp in rows:
            if amp["type"] != "amp" or generic_bnf(amp["bnf_code"]) != vmp["bnf_code"]:
                continue
            own = strength(amp["term"])
            if {k: own[k] for k in ("strength_value", "strength_unit", "per")} != {
                k: of[k] for k in ("strength_value", "strength_unit", "per")
            }:
                raise SystemExit(
                    f"AMP {amp['id']} {amp['term']!r}: its name does not state the strength "
                    f"and form of its VMP {code} {vmp['term']!r}"
                )
            products.append(_product(amp, "dm+d AMP", ingredient, own, vmp=code))
            used.append(amp_line)
    for p in products:
        if not snomed_concept_id(p["code"]):
            raise SystemExit(f"{p['code']} {p['display']!r}: not a valid SNOMED CT concept id")
    return products, used


def _product(
    row: dict[str, str],
    kind: str,
    ingredient: str,
    of: dict[str, Any],
    *,
    vmp: str | None,
    prev: str | None = None,
) -> dict[str, Any]:
    if row["code"] != row["id"]:
        raise SystemExit(f"{row['code']} / {row['id']}: code and id columns differ")
    return {
        "system": SNOMED,
        "code": row["id"],
        "display": row["term"],
        "kind": kind,
        "ingredient": ingredient,
        "strength_value": of["strength_value"],
        "strength_unit": of["strength_unit"],
        "per": of["per"],
        "vmp": vmp,  # an AMP's VMP (the wanted code)
        "previous": prev,  # a VMP's previous identifier, when dm+d replaced it
        "bnf_code": row["bnf_code"],
    }


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    text = Path(argv[1]).read_text(encoding="utf-8")
    wanted = tuple(argv[2:]) or WANTED_VMPS
    products, used = extract(text, wanted)
    EXCERPT.parent.mkdir(exist_ok=True)
    EXCERPT.write_text("\n".join([",".join(HEADER), *used]) + "\n", encoding="utf-8")
    OUT.write_text(  # then: ruff format src/nearfab/families/solid_dose/codes/dmd.py
        '"""dm+d product codes (VMP, AMP) with their strength, extracted by\n'
        "scripts/extract_dmd_product_codes.py from the source named in SOURCE (do not edit by "
        'hand:\nrun the script; the rows it used are sources/dmd-propranolol-tablets.csv)."""\n\n'
        "from typing import Any\n\n"
        f"SOURCE: dict[str, Any] = {pformat(SOURCE, width=96, sort_dicts=False)}\n\n"
        f"PRODUCTS: list[dict[str, Any]] = {pformat(products, width=96, sort_dicts=False)}\n"
    )
    print(f"{len(products)} products written to {OUT}, {len(used)} source rows to {EXCERPT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
