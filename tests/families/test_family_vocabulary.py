"""The core speaks no family's words (issue 15, DESIGN.md "The family kit").

Product words (tablet, printlet, nozzle, milligram doses, drug loading, unit mass; ISBT 128 and
cell words; islet, IEQ, bioink, stimulation index) may appear only inside a family's package
under `nearfab/families/` (any family's, and shared ones such as families/isbt128/) and in the
demo, which seeds a network of real products. `PENDING` lists the core files not yet moved onto
the kit, with how many lines each still has: the count may only fall, and the list must end empty.
"""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "nearfab"

FAMILY_WORDS = {
    "solid_dose": re.compile(
        r"tablet|printlet|dose_mg|_mg\b|nozzle|filament|drug.loading|unit.mass|extrusion",
        re.IGNORECASE,
    ),
    "cell_therapy": re.compile(
        r"isbt|\bDIN\b|donation.identification|cells?[ _/]kg|apheresis|cryo|viable.cell",
        re.IGNORECASE,
    ),
    # the family's name may be registered by bootstrap; its product words may not leave it
    "bioprint": re.compile(
        r"islet|\bIEQ\b|bioink|stimulation.index|glucose.stimulated|crosslink",
        re.IGNORECASE,
    ),
    "device": re.compile(
        r"flowmeter|uroflow|orifice|coupon|octoprint|moonraker|\bstl\b|\bfdm\b|"
        r"device.history.record",
        re.IGNORECASE,
    ),
}

# family words that may stay in the core: the demo seeds real products by name
ALLOWED = ("demo.py", "demo_loop.py", "demo_cell.py")

PENDING: dict[str, int] = {}


def _hits() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(SRC.rglob("*")):
        if path.suffix not in {".py", ".html", ".js", ".css"}:
            continue
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("families/") or rel in ALLOWED or rel.startswith("migrations/"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for family, words in FAMILY_WORDS.items():
                if words.search(line):
                    found.setdefault(rel, []).append(f"{rel}:{number} ({family}) {line.strip()}")
    return found


def test_the_core_speaks_no_family_words() -> None:
    found = _hits()
    grown = {rel: lines for rel, lines in found.items() if len(lines) > PENDING.get(rel, 0)}
    assert not grown, "family words in the core:\n" + "\n".join(
        line for lines in grown.values() for line in lines
    )


def test_the_pending_list_only_shrinks() -> None:
    found = _hits()
    stale = {rel: n for rel, n in PENDING.items() if len(found.get(rel, [])) < n}
    left = {rel: len(found.get(rel, [])) for rel in stale}
    assert not stale, f"lower these PENDING counts to what is left: {left}"


def test_the_words_are_caught() -> None:
    # the patterns themselves can fail: each catches its family's words and leaves core words
    assert FAMILY_WORDS["solid_dose"].search("order.dose_mg")
    assert FAMILY_WORDS["solid_dose"].search("a 5 mg printlet")
    assert FAMILY_WORDS["cell_therapy"].search("check the DIN before infusion")
    assert FAMILY_WORDS["cell_therapy"].search("dose in cells/kg")
    assert not FAMILY_WORDS["solid_dose"].search("batch record units made")
    assert not FAMILY_WORDS["cell_therapy"].search("a DINNER at the site")
    assert FAMILY_WORDS["bioprint"].search("5000 IEQ/kg of recipient")
    assert FAMILY_WORDS["bioprint"].search("the donor's islet isolation")
    assert FAMILY_WORDS["bioprint"].search("stimulation index")
    assert not FAMILY_WORDS["bioprint"].search("a unique requirement")
    assert FAMILY_WORDS["device"].search("the test coupon of an FDM build")
    assert not FAMILY_WORDS["device"].search("the build's approver signs the ticket")
