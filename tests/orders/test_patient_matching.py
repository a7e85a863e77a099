"""OrderService.match_patient (issue 20): the identifiers a hospital knows a patient by, matched
against an order's pseudonymous patient through keyed hashes stored at intake. SQLite and
PostgreSQL (the `seeded` fixture)."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select, text
from tests import flow_helpers as fh
from tests.patient_helpers import (
    ALICE,
    BOB,
    MRN_SYSTEM,
    Person,
    bundle_for,
    require_birth_date,
    submit_for,
)

from nearfab.bootstrap import App
from nearfab.common.errors import Forbidden, Refused, ValidationFailed
from nearfab.identity import AuditEntry, Permission
from nearfab.orders import PatientIdentifierHash, PatientMatch, PresentedIdentifiers

seeded = fh.seeded


def _match(
    app: App, order_id: str, username: str = "pharmacist", **presented: object
) -> PatientMatch:
    with app.uow() as uow:
        answer = app.orders.match_patient(
            uow,
            fh.actor(app, username),
            order_id,
            PresentedIdentifiers(**presented),  # type: ignore[arg-type]
            purpose="dispense",
            permission=Permission.PACK_VERIFY,
        )
        uow.commit()
        return answer


def test_each_identifier_finds_its_patient_and_not_another(seeded: App) -> None:
    alice, bob = submit_for(seeded, ALICE), submit_for(seeded, BOB)
    with seeded.uow() as uow:
        ref = seeded.orders.patient(uow, seeded.orders.get(uow, alice).patient_id).ref
    good = [
        {"nhs_number": "943 476 5919"},
        {"mrn": "k123456"},
        {"wristband": f"]d28018{ALICE.gsrn}"},
        {"wristband": "(8018)" + ALICE.gsrn},
        {"wristband": "9434765919"},  # a plain NHS-number barcode
        # an NHS wristband's GSRN (DCB1077): company prefix, NHS number, check digit (worked
        # in tests/orders/test_patient_identifiers.py); not stored, read for its NHS number
        {"wristband": "(8018)123456794347659199"},
        {"prescription_id": ALICE.prescription_id.lower()},
        {"patient_ref": ref},
        {"patient": "9434765919"},
        {"patient": "K123456"},
        {"patient": f"(8018){ALICE.gsrn}"},
        {"nhs_number": ALICE.nhs_number, "birth_date": ALICE.birth_date.isoformat()},
    ]
    for presented in good:
        answer = _match(seeded, alice, **presented)
        assert answer.matched, (presented, answer.message)
        # the pharmacist may read identity: name and birth date to confirm by eye
        assert answer.identity == {
            "name": ALICE.name,
            "birth_date": ALICE.birth_date.isoformat(),
        }
    # Bob's identifiers against Alice's order: refused naming the identifier, never whose it is
    for presented, field in [
        ({"nhs_number": BOB.nhs_number}, "nhs_number"),
        ({"mrn": BOB.mrn}, "mrn"),
        ({"wristband": f"(8018){BOB.gsrn}"}, "wristband"),
        # Bob's NHS number inside: odd 38 x 3 = 114, even 43; 157 -> check digit 3
        ({"wristband": "(8018)123456794347658703"}, "wristband"),
        ({"prescription_id": BOB.prescription_id}, "prescription_id"),
        ({"nhs_number": ALICE.nhs_number, "birth_date": BOB.birth_date.isoformat()}, "birth_date"),
        ({"mrn": ALICE.mrn, "nhs_number": BOB.nhs_number}, "nhs_number"),
    ]:
        answer = _match(seeded, alice, **presented)
        assert (answer.matched, answer.failed, answer.identity) == (False, field, None)
        for secret in (BOB.name, BOB.nhs_number, "Bob", bob):
            assert secret not in answer.message
        with pytest.raises(Refused) as caught:
            answer.require()
        assert (caught.value.code, caught.value.field) == ("wrong_patient", field)
    assert _match(seeded, bob, nhs_number=BOB.nhs_number).matched


def test_identifiers_that_cannot_be_one_are_refused_naming_the_field(seeded: App) -> None:
    alice = submit_for(seeded, ALICE)
    for presented, field in [
        ({"nhs_number": "9434765918"}, "nhs_number"),  # check digit 8, modulus 11 gives 9
        ({"wristband": f"(8018){ALICE.gsrn[:17]}3"}, "wristband"),  # mod-10 gives 4
        ({"patient": "943 476 5918"}, "patient"),
        ({"birth_date": "2017-02-30", "nhs_number": ALICE.nhs_number}, "birth_date"),
        ({"birth_date": ALICE.birth_date.isoformat()}, "patient"),  # a second identifier only
        ({}, "patient"),
    ]:
        with pytest.raises(ValidationFailed) as caught:
            _match(seeded, alice, **presented)
        assert caught.value.field == field, presented


def test_site_requiring_the_birth_date(seeded: App) -> None:
    alice = submit_for(seeded, ALICE)
    require_birth_date(seeded, "GSTT-PH")
    alone = _match(seeded, alice, nhs_number=ALICE.nhs_number)
    assert (alone.matched, alone.failed) == (False, "birth_date")
    assert "requires the date of birth" in alone.message
    both = _match(seeded, alice, nhs_number=ALICE.nhs_number, birth_date=ALICE.birth_date)
    assert both.matched
    wrong = _match(seeded, alice, mrn=ALICE.mrn, birth_date=BOB.birth_date)
    assert (wrong.matched, wrong.failed) == (False, "birth_date")


def test_role_without_identity_sees_the_result_only_and_other_site_is_forbidden(
    seeded: App,
) -> None:
    alice = submit_for(seeded, ALICE)
    # the QP verifies packs network-wide but may not read identity: the result only
    answer = _match(seeded, alice, "qp", nhs_number=ALICE.nhs_number)
    assert answer.matched and answer.identity is None
    fh.create_user(seeded, "pharm-man", ["pharmacist"], "MAN-PH")
    with pytest.raises(Forbidden):
        _match(seeded, alice, "pharm-man", nhs_number=ALICE.nhs_number)


def test_mrn_belongs_to_its_site_and_a_site_may_name_its_mrn_system(seeded: App) -> None:
    # an identifier not typed MR is taken as the ordering site's local number...
    untyped = submit_for(seeded, ALICE, typed_mrn=False)
    assert _match(seeded, untyped, mrn=ALICE.mrn).matched
    # ...unless the site names its MRN system: then only identifiers in it (or typed MR)
    require_birth_date(seeded, "GSTT-PH", required=False, mrn_system="https://other.example/mrn")
    bob_untyped = submit_for(seeded, BOB, typed_mrn=False)
    assert _match(seeded, bob_untyped, mrn=BOB.mrn).failed == "mrn"
    require_birth_date(seeded, "GSTT-PH", required=False, mrn_system=MRN_SYSTEM)
    carol = Person("4010232137", "K777", "123456789012345675", BOB.birth_date, "C-1", "Carol X")
    carol_order = submit_for(seeded, carol, typed_mrn=False)
    assert _match(seeded, carol_order, mrn="k777").matched
    # the same hospital number issued by another site is another patient's: hashed per site
    with seeded.uow() as uow:
        rows = list(
            uow.session.scalars(
                select(PatientIdentifierHash).where(PatientIdentifierHash.kind == "mrn")
            )
        )
        assert {r.site_id for r in rows} == {seeded.orders.get(uow, untyped).site_id}


def test_identifiers_recognised_by_their_value_and_the_nhs_number_oid(seeded: App) -> None:
    """A GSRN in a system nearfab does not know (18 digits, good check digit), and the NHS
    number under its HL7 OID, are recognised at intake."""
    doc = bundle_for(seeded, ALICE)
    doc["entry"][0]["resource"]["identifier"] = [
        {"system": "urn:oid:2.16.840.1.113883.2.1.4.1", "value": ALICE.nhs_number},
        {"system": "https://trust.example/wristband", "value": ALICE.gsrn},
    ]
    with seeded.uow() as uow:
        [order] = seeded.orders.submit(uow, fh.actor(seeded, "clinician"), doc)
    assert _match(seeded, order.id, nhs_number=ALICE.nhs_number).matched
    assert _match(seeded, order.id, wristband=f"(8018){ALICE.gsrn}").matched
    # the GSRN is not also taken as a hospital number
    assert _match(seeded, order.id, mrn=ALICE.gsrn).failed == "mrn"


def test_nothing_in_clear_and_every_look_up_audited(seeded: App) -> None:
    alice = submit_for(seeded, ALICE)
    _match(seeded, alice, nhs_number=ALICE.nhs_number)
    _match(seeded, alice, nhs_number=BOB.nhs_number)
    with seeded.uow() as uow:
        rows = list(uow.session.scalars(select(PatientIdentifierHash)))
        kinds = sorted(r.kind for r in rows)
        assert kinds == ["birth_date", "mrn", "nhs_number", "prescription_id", "wristband"]
        dump = repr([(r.hash, r.kind, r.site_id) for r in rows])
        audits = list(
            uow.session.scalars(
                select(AuditEntry).where(
                    AuditEntry.action == "identify_patient", AuditEntry.entity_id == alice
                )
            )
        )
        assert [(a.new or {}).get("matched") for a in audits] == [True, False]
        assert [(a.new or {}).get("presented") for a in audits] == [["nhs_number"]] * 2
        everything = dump + repr([(a.new, a.reason) for a in audits])
        # every table's text: no identifier in clear outside the vault's ciphertext
        for table in ("patient_identifier_hashes", "audit_entries", "patients", "orders"):
            everything += repr(uow.session.execute(text(f"SELECT * FROM {table}")).all())
    for secret in (ALICE.nhs_number, ALICE.mrn, ALICE.gsrn, "2017-03-14", BOB.nhs_number):
        assert secret not in everything


def test_a_patient_taken_in_before_the_hashes_is_matched_from_its_identity(seeded: App) -> None:
    alice = submit_for(seeded, ALICE)
    with seeded.uow() as uow:
        patient_id = seeded.orders.get(uow, alice).patient_id
        uow.session.execute(
            delete(PatientIdentifierHash).where(PatientIdentifierHash.patient_id == patient_id)
        )
        uow.commit()
        ref = seeded.orders.patient(uow, patient_id).ref
    assert _match(seeded, alice, patient_ref=ref).matched
    assert _match(seeded, alice, nhs_number=ALICE.nhs_number).matched
    assert _match(seeded, alice, prescription_id=ALICE.prescription_id).matched
    assert _match(seeded, alice, nhs_number=BOB.nhs_number).failed == "nhs_number"
    with seeded.uow() as uow:  # read in memory, never written back
        assert uow.session.scalar(select(PatientIdentifierHash).limit(1)) is None


def test_the_prescription_id_finds_the_order(seeded: App) -> None:
    alice, _bob = submit_for(seeded, ALICE), submit_for(seeded, BOB)
    fh.create_user(seeded, "pharm-man", ["pharmacist"], "MAN-PH")

    def find(username: str, text: str) -> list[str]:
        with seeded.uow() as uow:
            return [
                o.id
                for o in seeded.orders.list_orders(
                    uow, actor=fh.actor(seeded, username), prescription_id=text
                )
            ]

    # as printed on the paper copy, in any case and with spaces around it
    assert find("pharmacist", f" {ALICE.prescription_id.lower()} ") == [alice]
    assert find("pharmacist", "NOT-A-PRESCRIPTION") == []
    assert find("pharm-man", ALICE.prescription_id) == []  # another site's order: not found
    with seeded.uow() as uow:
        rows = list(
            uow.session.scalars(select(AuditEntry).where(AuditEntry.action == "find_order"))
        )
        assert [(r.new or {})["found"] for r in rows] == [[alice], [], []]
        assert ALICE.prescription_id not in repr([(r.new, r.entity_id) for r in rows])
        # a prescription taken in before the hashes: found by its stored identifier
        uow.session.execute(delete(PatientIdentifierHash))
        uow.commit()
    assert find("pharmacist", ALICE.prescription_id) == [alice]
