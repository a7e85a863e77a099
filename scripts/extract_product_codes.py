"""Extract the product codes nearfab's demo master files declare, with their strength, from a
maintained public source, into `src/nearfab/families/solid_dose/codes/products.py`.

Never type a product code or a strength by hand: add the code to WANTED (or pass it on the
command line) and run this script on the source file.

Source (RxNorm): the NLM Value Set Authority Center (VSAC) value set "Beta Blocker Therapy"
(OID 2.16.840.1.113883.3.526.3.1174), as published with the CMS eCQM content in
github.com/cqframework/ecqm-content-qicore-2025 (CC0-1.0),
`input/vocabulary/valueset/external/valueset-2.16.840.1.113883.3.526.3.1174.json`. Its
expansion lists RxNorm semantic clinical drugs (SCD) with their RxNorm normalised names.

The strength is read from the RxNorm normalised name of a single-ingredient, fixed-strength,
conventional-release solid oral drug, "<ingredient> <number> MG|MCG Oral Tablet|Oral Capsule"
(RxNorm's naming convention for SCDs: ingredient, strength, dose form). Any other name (two
ingredients "A / B", "24 HR ... Extended Release", a concentration "MG/ML", other forms) is
refused: its strength per unit cannot be read this way.

    python scripts/extract_product_codes.py VALUESET.json [CODE ...]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from pprint import pformat
from typing import Any

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
OUT = Path(__file__).resolve().parent.parent / "src/nearfab/families/solid_dose/codes/products.py"
# the product codes the demo master files declare (src/nearfab/demo.py)
WANTED = ("856448", "856457", "856519")
SOURCE = {
    "name": "NLM VSAC value set Beta Blocker Therapy (2.16.840.1.113883.3.526.3.1174)",
    "repository": "github.com/cqframework/ecqm-content-qicore-2025",
    "commit": "db5a7e143304b19b70cbf6a89e5ebeab9e40df61",
    "path": "input/vocabulary/valueset/external/valueset-2.16.840.1.113883.3.526.3.1174.json",
    "licence": "CC0-1.0 (the repository); RxNorm content from the U.S. National Library of "
    "Medicine",
}
_SCD = re.compile(
    r"^(?P<ingredient>[a-z][a-z ,\-]*[a-z]) (?P<value>\d+(?:\.\d+)?) (?P<unit>MG|MCG) "
    r"(?P<form>Oral Tablet|Oral Capsule)$"
)
_UNITS = {"MG": "mg", "MCG": "ug"}


def product(entry: dict[str, Any]) -> dict[str, Any]:
    display = entry["display"]
    match = _SCD.match(display)
    if match is None:
        raise SystemExit(
            f"{entry['code']} {display!r}: not a single-ingredient fixed-strength oral "
            "tablet or capsule; its strength per unit cannot be read"
        )
    return {
        "system": entry["system"],
        "code": entry["code"],
        "display": display,
        "kind": "RxNorm SCD",
        "ingredient": match["ingredient"],
        "strength_value": float(match["value"]),
        "strength_unit": _UNITS[match["unit"]],
        "per": match["form"].split()[-1].lower(),  # tablet, capsule
        "code_system_version": entry.get("version"),
    }


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    source = json.loads(Path(argv[1]).read_text())
    wanted = tuple(argv[2:]) or WANTED
    found = {
        c["code"]: c
        for c in source.get("expansion", {}).get("contains", [])
        if c.get("system") == RXNORM
    }
    missing = [c for c in wanted if c not in found]
    if missing:
        raise SystemExit(f"not in the source value set: {', '.join(missing)}")
    products = [product(found[c]) for c in wanted]
    meta = {
        **SOURCE,
        "valueset_version": source.get("version"),
        "expansion_timestamp": source.get("expansion", {}).get("timestamp"),
    }
    OUT.write_text(  # then: ruff format src/nearfab/families/solid_dose/codes/products.py
        '"""Product codes with their strength, extracted by scripts/extract_product_codes.py\n'
        'from the source named in SOURCE (do not edit by hand: run the script)."""\n\n'
        "from typing import Any\n\n"
        f"SOURCE: dict[str, Any] = {pformat(meta, width=96, sort_dicts=False)}\n\n"
        f"PRODUCTS: list[dict[str, Any]] = {pformat(products, width=96, sort_dicts=False)}\n"
    )
    print(f"{len(products)} products written to {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
