"""The cell family's chain of identity rules (families/cell_therapy/logic/chain.py and the hooks
custody and scheduling call), with DINs from ICCBBA ST-001 v6.2.2 only:

- Appendix A.1 worked example: DIN G1234 17 654321, weighted sum 146178, checksum 10, keyboard
  entry check character K = A; its Type 3 flags are 60 + 10 = 70 (data content G12341765432170).
- §7.5.1.1: A9998 18 123456 has K = N (boxed); §7.4.1: W0000 09 123456, flags 02, K = G.

Expected answers are those published values; none is computed by the code under test.
"""

from __future__ import annotations

import itertools

import pytest

from nearfab.common.errors import Refused, ValidationFailed
from nearfab.custody import kit as custody_kit
from nearfab.families.cell_therapy.family import CellTherapyFamily
from nearfab.families.cell_therapy.labels import CellTherapyLabels
from nearfab.families.cell_therapy.logic.chain import collection_din, din_mismatch
from nearfab.scheduling import kit as scheduling_kit

G1234_SCANNED = "=G12341765432100"  # data structure 001, flags 00
G1234_TYPE3 = "=G12341765432170"  # the same DIN with its Type 3 flags (checksum 10 + 60)
G1234_TYPED = "G1234 17 654321 [A]"
A9998_TYPED = "A9998 18 123456 N"
A9998_SCANNED = "=A99981812345600"
W0000_TYPED = "W0000 09 123456 02 G"


@pytest.mark.parametrize(
    "presented",
    [G1234_SCANNED, G1234_TYPE3, G1234_TYPED, "g1234 17 654321 a", "G123417654321(A)"],
)
def test_every_form_of_the_same_din_matches(presented: str) -> None:
    # the scan, the scan of a bag labelled with Type 3 flags, the eye-readable text with its K
    # boxed, typed in lower case, or with another box: one collection
    assert din_mismatch(G1234_SCANNED, presented) is None
    assert din_mismatch(G1234_TYPED, presented) is None


@pytest.mark.parametrize(
    ("presented", "says"),
    [
        (A9998_TYPED, "A9998 18 123456 [N] is not this product's DIN G1234 17 654321 [A]"),
        (A9998_SCANNED, "is not this product's DIN"),
        ("G1234 17 654321 [B]", "keyboard entry error (expected 'A')"),  # ST-001: K is A
        ("=G12341765432171", "Type 3 flags 71 do not match"),  # 70 is right, 71 is not
        ("G1234 17 654321", "is missing"),  # typed without K
        ("=G1234176543", "15 characters"),
        ("", "no DIN was scanned"),
    ],
)
def test_another_din_a_wrong_check_character_or_no_din_is_a_mismatch(
    presented: str, says: str
) -> None:
    why = din_mismatch(G1234_SCANNED, presented)
    assert why is not None and says in why, why


def test_the_collection_binds_the_din_as_scanned_or_checks_the_prescription_s() -> None:
    # no DIN on the prescription: the bag's DIN is bound (data structure 001, flags 00)
    assert collection_din(None, A9998_TYPED, field="identifier") == A9998_SCANNED
    assert collection_din(None, W0000_TYPED, field="identifier") == "=W00000912345602"
    # the prescription's DIN: the same collection in either form
    assert collection_din(G1234_SCANNED, G1234_TYPED, field="identifier") == G1234_SCANNED
    with pytest.raises(Refused) as refused:
        collection_din(G1234_SCANNED, A9998_TYPED, field="identifier")
    assert (refused.value.code, refused.value.field) == ("identity_mismatch", "identifier")
    assert "G1234 17 654321 [A]" in refused.value.message
    with pytest.raises(ValidationFailed) as bad:
        collection_din(None, "A9998 18 123456 [M]", field="identifier")  # K is N
    assert bad.value.field == "identifier.check_character"
    with pytest.raises(ValidationFailed) as bad:
        collection_din(None, "=A9998", field="identifier")
    assert bad.value.field == "identifier"


def test_custody_and_scheduling_reach_the_rules_through_their_kits() -> None:
    family, labels = CellTherapyFamily(), CellTherapyLabels()
    assert custody_kit.declares_chain_identifier(labels)
    assert custody_kit.chain_identifier(labels, {"din": G1234_TYPED}) == G1234_SCANNED
    assert custody_kit.chain_identifier(labels, {}) is None
    assert custody_kit.check_chain_identifier(labels, G1234_SCANNED, G1234_TYPED) is None
    assert custody_kit.check_chain_identifier(labels, G1234_SCANNED, A9998_TYPED)
    # CBV 2.0 business steps of the three hand-overs
    steps = labels.hand_over_steps()
    assert [custody_kit.hand_over_biz_step(labels, a, b) for a, b in itertools.pairwise(steps)] == [
        "receiving",
        "storing",
        "picking",
    ]
    assert scheduling_kit.pre_collection_records(family, {}) == ("eligibility", "consent")
    assert scheduling_kit.declares_collection_identifier(family)
    assert (
        scheduling_kit.collection_identifier(family, {"din": G1234_SCANNED}, G1234_TYPED)
        == G1234_SCANNED
    )
    with pytest.raises(Refused):  # the first collection answers to the prescription's DIN
        scheduling_kit.collection_identifier(family, {"din": G1234_SCANNED}, A9998_TYPED)
    # a new collection after a failed run is a new donation: its own DIN is bound
    assert (
        scheduling_kit.collection_identifier(
            family, {"din": G1234_SCANNED}, A9998_TYPED, first=False
        )
        == A9998_SCANNED
    )


def test_a_family_without_the_hooks_has_no_chain_identifier_and_no_pre_collection_records() -> None:
    class Plain:
        pass

    plain = Plain()
    assert not custody_kit.declares_chain_identifier(plain)  # type: ignore[arg-type]
    assert custody_kit.chain_identifier(plain, {"din": G1234_SCANNED}) is None  # type: ignore[arg-type]
    assert custody_kit.hand_over_biz_step(plain, "a", "b") == "receiving"  # type: ignore[arg-type]
    assert scheduling_kit.pre_collection_records(plain, {}) == ()
    assert scheduling_kit.collection_identifier(plain, {}, "anything") is None
