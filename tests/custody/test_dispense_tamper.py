"""Issue 12 item 8: a dispense rests on signed facts only. Each attack edits the database with
plain SQL (no application call, no row version bumped) the way an attacker with database
access would, then tries to get the pack handed over through the API and the web dispense
page. The QP's decision must be *release* in what was signed, and the pack's patient, GTIN,
lot, serial and expiry must be what the release ledgered: otherwise the answer is
`integrity_failure`, an alert is raised, the refusal is audited, and nothing is dispensed.
SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch

from nearfab.bootstrap import App
from nearfab.common.clock import ManualClock
from nearfab.common.gs1 import validate_gtin
from nearfab.custody import CustodyAlert, Dispense, SerialUnit, make_identifier
from nearfab.identity import AuditEntry
from nearfab.web.server import create_web_app


def _build_world(app: App) -> dict[str, str]:
    """The demo network with a made batch awaiting its QP (`made`), a rejected batch, and two
    released batches (`second` last, so its release is the last entry of its ledger chain).
    Built once per backend; each test gets its own copy (tests/flow_helpers.py)."""
    made = fh.make_batch(app)
    rejected = fh.make_batch(app)
    fh.reject(app, rejected)
    first, _ = ch.released_batch(app)
    second, _ = ch.released_batch(app)
    return {"made": made, "rejected": rejected, "first": first, "second": second}


world = fh.world_fixture(_build_world)


@pytest.fixture
def seeded(world: fh.Built) -> App:
    """The test's copy of `_build_world`'s network."""
    app: App = world.app
    return app


@pytest.fixture
def batches(world: fh.Built) -> dict[str, str]:
    """`_build_world`'s batch ids by name."""
    ids: dict[str, str] = world.data
    return ids


flushed_verification_log = ch.flushed_verification_log
DAY = 86_400


def _sql(app: App, statement: str, **params: object) -> None:
    """The attacker's edit: plain SQL in its own transaction."""
    with app.engine.begin() as conn:
        result = conn.execute(text(statement), params)
        assert result.rowcount >= 1, statement  # type: ignore[attr-defined]


def _unit(app: App, unit_id: str) -> SerialUnit:
    with app.uow() as uow:
        found = uow.session.get(SerialUnit, unit_id)
        assert found is not None
        uow.session.expunge(found)
        return found


def _other_gtin(gtin: str) -> str:
    """Another valid GTIN-14 (GS1 check digit: weights 3, 1, ... from the right)."""
    body = gtin[:-2] + ("1" if gtin[-2] != "1" else "2")
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return validate_gtin(body + str((10 - total % 10) % 10))


@dataclass
class Tampered:
    unit: SerialUnit  # the pack as its row now says (the label an attacker would print)
    patient_ref: str  # the patient it would be handed to


def _rejected_flipped_to_released(app: App, clock: ManualClock, b: dict[str, str]) -> Tampered:
    batch_id = b["rejected"]
    unit = ch.units(app, batch_id)[0]
    assert unit.status == "rejected"
    _sql(app, "UPDATE serial_units SET status = 'released' WHERE batch_id = :b", b=batch_id)
    _sql(app, "UPDATE batch_records SET status = 'released' WHERE id = :b", b=batch_id)
    _sql(app, "UPDATE orders SET status = 'released' WHERE id = :o", o=unit.order_id)
    return Tampered(_unit(app, unit.id), ch.patient_ref(app, unit))


def _rejected_and_review_flipped(app: App, clock: ManualClock, b: dict[str, str]) -> Tampered:
    """The fuller attack: the release review's decision is flipped too."""
    tampered = _rejected_flipped_to_released(app, clock, b)
    _sql(
        app,
        "UPDATE release_reviews SET decision = 'release', status = 'released' WHERE batch_id = :b",
        b=tampered.unit.batch_id,
    )
    return tampered


def _patient_repointed(app: App, clock: ManualClock, b: dict[str, str]) -> Tampered:
    packs, others = ch.units(app, b["first"]), ch.units(app, b["second"])
    victim, other = packs[0], others[0]
    assert victim.patient_id != other.patient_id
    _sql(
        app,
        "UPDATE serial_units SET patient_id = :p WHERE id = :u",
        p=other.patient_id,
        u=victim.id,
    )
    return Tampered(_unit(app, victim.id), ch.patient_ref(app, other))


def _expiry_extended(app: App, clock: ManualClock, b: dict[str, str]) -> Tampered:
    packs = ch.units(app, b["first"])
    unit = packs[0]
    clock.advance(((unit.expiry - clock.now().date()).days + 2) * DAY)  # expired now
    _sql(
        app,
        "UPDATE serial_units SET expiry = :e WHERE id = :u",
        e=unit.expiry + timedelta(days=365),
        u=unit.id,
    )
    return Tampered(_unit(app, unit.id), ch.patient_ref(app, unit))


def _lot_changed(app: App, clock: ManualClock, b: dict[str, str]) -> Tampered:
    packs = ch.units(app, b["first"])
    _sql(app, "UPDATE serial_units SET batch_number = 'TAMPERED1' WHERE id = :u", u=packs[0].id)
    return Tampered(_unit(app, packs[0].id), ch.patient_ref(app, packs[0]))


def _gtin_changed(app: App, clock: ManualClock, b: dict[str, str]) -> Tampered:
    packs = ch.units(app, b["first"])
    _sql(
        app,
        "UPDATE serial_units SET gtin = :g WHERE id = :u",
        g=_other_gtin(packs[0].gtin),
        u=packs[0].id,
    )
    return Tampered(_unit(app, packs[0].id), ch.patient_ref(app, packs[0]))


def _quarantined_flipped_to_released(app: App, clock: ManualClock, b: dict[str, str]) -> Tampered:
    """A pack never decided on by a QP, its status set to released."""
    batch_id = b["made"]
    unit = ch.units(app, batch_id)[0]
    _sql(app, "UPDATE serial_units SET status = 'released' WHERE id = :u", u=unit.id)
    return Tampered(_unit(app, unit.id), ch.patient_ref(app, unit))


ATTACKS: dict[str, Callable[[App, ManualClock, dict[str, str]], Tampered]] = {
    "rejected_status_flipped": _rejected_flipped_to_released,
    "rejected_review_flipped": _rejected_and_review_flipped,
    "quarantined_status_flipped": _quarantined_flipped_to_released,
    "patient_repointed": _patient_repointed,
    "expiry_extended": _expiry_extended,
    "lot_changed": _lot_changed,
    "gtin_changed": _gtin_changed,
}


def _scan(unit: SerialUnit) -> str:
    """The label an attacker prints from the tampered row."""
    ident = make_identifier(unit.gtin, unit.serial, unit.batch_number, unit.expiry)
    return "]d2" + ident.datamatrix_data()


def _token(client: TestClient, username: str = "pharmacist") -> dict[str, str]:
    res = client.post(
        "/api/v1/auth/token", json={"username": username, "password": fh.TEST_PASSWORD}
    )
    assert res.status_code == 200, res.text
    return {"Authorization": f"Bearer {res.json()['access_token']}"}


def _web_login(client: TestClient) -> str:
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    data = {"username": "pharmacist", "password": fh.TEST_PASSWORD}
    if token:
        data["csrf_token"] = token.group(1)
    client.post("/login", data=data)
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/dispense").text)
    assert found
    return found.group(1)


def _assert_not_dispensed(app: App, unit_id: str) -> None:
    assert _unit(app, unit_id).status != "dispensed"
    with app.uow() as uow:
        assert uow.session.scalar(select(Dispense).where(Dispense.unit_id == unit_id)) is None


def _integrity_alerts(app: App, unit_id: str) -> int:
    with app.uow() as uow:
        return len(
            uow.session.scalars(
                select(CustodyAlert).where(
                    CustodyAlert.kind == "integrity_failure", CustodyAlert.unit_id == unit_id
                )
            ).all()
        )


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_tampered_pack_is_refused_through_the_api(
    seeded: App, clock: ManualClock, batches: dict[str, str], attack: str
) -> None:
    tampered = ATTACKS[attack](seeded, clock, batches)
    unit = tampered.unit
    client = TestClient(create_web_app(seeded))
    headers = _token(client)
    body = {"scan": _scan(unit), "patient_ref": tampered.patient_ref}
    checked = client.post("/api/v1/verify", json=body, headers=headers)
    assert checked.status_code == 200, checked.text
    assert checked.json()["status"] == "integrity_failure", checked.json()
    assert "tampered" in checked.json()["message"]
    assert checked.json()["alert_id"]
    done = client.post("/api/v1/dispense", json=body, headers=headers)
    assert done.status_code == 409, done.text
    assert done.json()["error"]["code"] == "integrity_failure"
    _assert_not_dispensed(seeded, unit.id)
    assert _integrity_alerts(seeded, unit.id) == 2  # the check and the refused dispense
    with seeded.uow() as uow:
        refusals = uow.session.scalars(
            select(AuditEntry).where(
                AuditEntry.action == "refuse", AuditEntry.entity_type == "dispense"
            )
        ).all()
    assert [r.new["code"] for r in refusals] == ["integrity_failure"]  # type: ignore[index]


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_tampered_pack_is_refused_on_the_web_dispense_page(
    seeded: App, clock: ManualClock, batches: dict[str, str], attack: str
) -> None:
    tampered = ATTACKS[attack](seeded, clock, batches)
    unit = tampered.unit
    client = TestClient(create_web_app(seeded))
    csrf = _web_login(client)
    form = {"scan": _scan(unit), "patient_ref": tampered.patient_ref, "csrf_token": csrf}
    checked = client.post("/dispense", data=form | {"action": "verify"})
    assert '<span id="status" class="status">integrity_failure</span>' in checked.text
    assert '<b id="verdict">Do NOT hand over: its release record does not match' in checked.text
    done = client.post("/dispense", data=form | {"action": "dispense"})
    assert done.status_code == 409
    assert '<span id="status" class="status">integrity_failure</span>' in done.text
    _assert_not_dispensed(seeded, unit.id)


def test_an_untampered_pack_is_still_dispensed_and_the_release_is_ledgered(
    seeded: App, batches: dict[str, str]
) -> None:
    """The control: the same path dispenses a pack nobody touched; its facts are ledgered."""
    import json

    from nearfab.custody import LedgerEntry

    batch_id = batches["first"]
    packs = ch.units(seeded, batch_id)
    with seeded.uow() as uow:
        payload = uow.session.scalar(
            select(LedgerEntry.payload).where(LedgerEntry.ref == f"release:{batch_id}")
        )
    assert payload is not None
    signed = json.loads(payload)["body"]
    assert signed["decision"] == "release"
    assert {p["serial"]: p["patient_id"] for p in signed["packs"]} == {
        u.serial: u.patient_id for u in packs
    }
    client = TestClient(create_web_app(seeded))
    body = {"scan": ch.scan(packs[0]), "patient_ref": ch.patient_ref(seeded, packs[0])}
    done = client.post("/api/v1/dispense", json=body, headers=_token(client))
    assert done.status_code == 200, done.text
    assert _unit(seeded, packs[0].id).status == "dispensed"


def test_a_forged_release_entry_is_not_trusted(seeded: App, batches: dict[str, str]) -> None:
    """Editing the ledger's release entry (the facts) breaks its hash; re-hashing it breaks
    its Ed25519 signature; a key row swapped in is not sealed with this installation's key."""
    import hashlib
    import json

    from nearfab.custody import LedgerEntry

    packs, others = ch.units(seeded, batches["first"]), ch.units(seeded, batches["second"])
    victim, other = packs[0], others[0]
    _sql(
        seeded,
        "UPDATE serial_units SET patient_id = :p WHERE id = :u",
        p=other.patient_id,
        u=victim.id,
    )
    ref = f"release:{victim.batch_id}"
    with seeded.uow() as uow:
        entry = uow.session.scalar(select(LedgerEntry).where(LedgerEntry.ref == ref))
        assert entry is not None
        whole = json.loads(entry.payload)
        prev = entry.prev_hash
    for pack in whole["body"]["packs"]:
        if pack["serial"] == victim.serial:
            pack["patient_id"] = other.patient_id
    forged = json.dumps(whole, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    rehashed = hashlib.sha256(prev.encode() + b"\n" + forged.encode()).hexdigest()
    _sql(
        seeded,
        "UPDATE custody_ledger SET payload = :p, entry_hash = :h WHERE ref = :r",
        p=forged,
        h=rehashed,
        r=ref,
    )
    with seeded.uow() as uow:
        answer = seeded.custody.verify(
            uow,
            fh.actor(seeded, "pharmacist"),
            scan=_scan(_unit(seeded, victim.id)),
            patient_ref=ch.patient_ref(seeded, other),
        )
    assert answer.status == "integrity_failure"
    assert "signed" in answer.message


def test_a_pack_tampered_before_release_is_not_released(
    seeded: App, batches: dict[str, str]
) -> None:
    """A pack re-pointed to another patient while quarantined: the QP's release does not
    release it (its row differs from the signed batch record and the order), it stays in
    quarantine with an integrity alert, and its siblings are released."""
    others = ch.units(seeded, batches["first"])
    batch_id = batches["made"]
    packs = ch.units(seeded, batch_id)
    victim = packs[0]
    _sql(
        seeded,
        "UPDATE serial_units SET patient_id = :p WHERE id = :u",
        p=others[0].patient_id,
        u=victim.id,
    )
    fh.release(seeded, batch_id)
    after = {u.id: u.status for u in ch.units(seeded, batch_id)}
    assert after[victim.id] == "quarantine"
    assert all(after[u.id] == "released" for u in packs[1:])
    assert _integrity_alerts(seeded, victim.id) == 1
    tampered = _unit(seeded, victim.id)
    client = TestClient(create_web_app(seeded))
    body = {"scan": _scan(tampered), "patient_ref": ch.patient_ref(seeded, others[0])}
    done = client.post("/api/v1/dispense", json=body, headers=_token(client))
    assert done.status_code == 409
    _assert_not_dispensed(seeded, victim.id)


def test_a_release_entry_signed_as_part_of_a_block_is_trusted_once_covered(
    seeded: App, batches: dict[str, str]
) -> None:
    """An entry appended in a block carries no signature of its own; the next signed entry
    of its chain covers it. Without one (the covering entry deleted, or never made) the
    release is not trusted; with one, the pack verifies again."""
    from nearfab.custody import LedgerEntry
    from nearfab.custody.enums import LedgerKind

    batch_id = batches["second"]  # the last release of the world: nothing after it
    packs = ch.units(seeded, batch_id)
    ref = f"release:{batch_id}"
    with seeded.uow() as uow:
        site_id = uow.session.scalar(select(LedgerEntry.site_id).where(LedgerEntry.ref == ref))
    assert site_id is not None
    _sql(seeded, "UPDATE custody_ledger SET signature = '' WHERE ref = :r", r=ref)

    def status() -> str:
        with seeded.uow() as uow:
            return seeded.custody.verify(
                uow, fh.actor(seeded, "pharmacist"), scan=ch.scan(packs[0])
            ).status.value

    assert status() == "integrity_failure"  # the last entry of its chain: nothing covers it
    with seeded.uow() as uow:
        seeded.custody_chain.ledger.append(uow, site_id, LedgerKind.EPCIS, "next", {"n": 1})
        uow.commit()
    assert status() == "ok"


def test_a_forged_entry_of_a_block_another_scan_walked_is_still_caught(
    seeded: App, batches: dict[str, str]
) -> None:
    """Verification remembers the entries a walk to a covering signature passed (one walk per
    block, not per batch). That memory vouches only for the entry hashes it walked: a release
    entry of the same block rewritten afterwards with its own hash recomputed, together with
    the pack row it describes, is not covered by any signature (the next link still names the
    old hash), and the pack is refused as an integrity failure."""
    import json

    from nearfab.custody import LedgerEntry
    from nearfab.custody.enums import LedgerKind
    from nearfab.custody.logic.ledger import entry_hash

    first, second = batches["first"], batches["second"]
    with seeded.uow() as uow:
        (site_a, seq_a), (site_b, seq_b) = (
            uow.session.execute(
                select(LedgerEntry.site_id, LedgerEntry.seq).where(
                    LedgerEntry.ref == f"release:{b}"
                )
            ).one()
            for b in (first, second)
        )
    assert site_a == site_b and seq_a < seq_b  # one chain: `first` released before `second`
    # the entries from the first release to the second become one unsigned block...
    _sql(
        seeded,
        "UPDATE custody_ledger SET signature = '' WHERE site_id = :s AND seq BETWEEN :a AND :b",
        s=site_a,
        a=seq_a,
        b=seq_b,
    )
    with seeded.uow() as uow:  # ...covered by the next signed entry of the chain
        seeded.custody_chain.ledger.append(uow, site_a, LedgerKind.EPCIS, "next", {"n": 1})
        uow.commit()

    def status(unit: SerialUnit) -> str:
        with seeded.uow() as uow:
            return seeded.custody.verify(
                uow, fh.actor(seeded, "pharmacist"), scan=ch.scan(unit)
            ).status.value

    # a pack of the first batch verifies: its walk to the cover passes the second's entry
    assert status(ch.units(seeded, first)[0]) == "ok"

    # the attacker gives a pack of the second batch to another patient, in its row and in
    # the release entry, the entry's own hash recomputed so that it matches its payload
    victim = ch.units(seeded, second)[0]
    other_patient = ch.units(seeded, first)[0].patient_id
    assert other_patient != victim.patient_id
    with seeded.uow() as uow:
        entry = uow.session.scalar(
            select(LedgerEntry).where(LedgerEntry.ref == f"release:{second}")
        )
        assert entry is not None
        whole = json.loads(entry.payload)
        for pack in whole["body"]["packs"]:
            if pack["serial"] == victim.serial:
                pack["patient_id"] = other_patient
        payload = json.dumps(whole, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        forged = entry_hash(entry.prev_hash, payload)
    _sql(
        seeded,
        "UPDATE custody_ledger SET payload = :p, entry_hash = :h WHERE ref = :r",
        p=payload,
        h=forged,
        r=f"release:{second}",
    )
    _sql(
        seeded,
        "UPDATE serial_units SET patient_id = :p WHERE id = :u",
        p=other_patient,
        u=victim.id,
    )
    assert status(victim) == "integrity_failure"


def _one_block(app: App, first: str, second: str) -> tuple[str, int, int]:
    """The release entries of `first` and `second` and every entry between them made one
    unsigned block, covered by the next signed entry of their chain (as `append_many` signs):
    (site, seq of first, seq of second)."""
    from nearfab.custody import LedgerEntry
    from nearfab.custody.enums import LedgerKind

    with app.uow() as uow:
        (site_a, seq_a), (site_b, seq_b) = (
            uow.session.execute(
                select(LedgerEntry.site_id, LedgerEntry.seq).where(
                    LedgerEntry.ref == f"release:{b}"
                )
            ).one()
            for b in (first, second)
        )
    assert site_a == site_b and seq_a < seq_b  # one chain: `first` released before `second`
    _sql(
        app,
        "UPDATE custody_ledger SET signature = '' WHERE site_id = :s AND seq BETWEEN :a AND :b",
        s=site_a,
        a=seq_a,
        b=seq_b,
    )
    with app.uow() as uow:
        app.custody_chain.ledger.append(uow, site_a, LedgerKind.EPCIS, "next", {"n": 1})
        uow.commit()
    return site_a, seq_a, seq_b


def _walks(app: App, unit: SerialUnit) -> tuple[str, int]:
    """A verification's status and how many pages of a chain it read to find a covering
    signature (the walk's statement names a range of seq; no other statement does)."""
    from sqlalchemy import event

    pages: list[str] = []

    def count(_conn: object, _cursor: object, sql: str, *_args: object) -> None:
        if "custody_ledger.seq >=" in " ".join(sql.split()):
            pages.append(sql)

    event.listen(app.engine, "before_cursor_execute", count)
    try:
        with app.uow() as uow:
            answer = app.custody.verify(uow, fh.actor(app, "pharmacist"), scan=ch.scan(unit))
    finally:
        event.remove(app.engine, "before_cursor_execute", count)
    return answer.status.value, len(pages)


def test_one_walk_vouches_for_the_block_before_the_scanned_entry_too(
    seeded: App, batches: dict[str, str]
) -> None:
    """The walk to a covering signature starts at the first entry of the scanned entry's
    block (sixth pass, docs/performance.md): a scan of the later release walks once, and a
    pack of the earlier release of the same block then verifies without a walk of its own."""
    first, second = batches["first"], batches["second"]
    _one_block(seeded, first, second)
    assert _walks(seeded, ch.units(seeded, second)[0]) == ("ok", 1)
    assert _walks(seeded, ch.units(seeded, first)[0]) == ("ok", 0)


def test_a_forged_entry_before_the_walked_one_in_its_block_is_still_caught(
    seeded: App, batches: dict[str, str]
) -> None:
    """A walk that starts before the scanned entry vouches only for entries linked unbroken
    to it: a release entry earlier in the block rewritten (its own hash recomputed, the pack
    row it describes changed to match) before another scan walks past it is left out (the
    next link still names its old hash), and its pack is refused as an integrity failure."""
    import json

    from nearfab.custody import LedgerEntry
    from nearfab.custody.logic.ledger import entry_hash

    first, second = batches["first"], batches["second"]
    _one_block(seeded, first, second)
    victim = ch.units(seeded, first)[0]
    other_patient = ch.units(seeded, second)[0].patient_id
    assert other_patient != victim.patient_id
    with seeded.uow() as uow:
        entry = uow.session.scalar(select(LedgerEntry).where(LedgerEntry.ref == f"release:{first}"))
        assert entry is not None
        whole = json.loads(entry.payload)
        for pack in whole["body"]["packs"]:
            if pack["serial"] == victim.serial:
                pack["patient_id"] = other_patient
        payload = json.dumps(whole, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        forged = entry_hash(entry.prev_hash, payload)
    _sql(
        seeded,
        "UPDATE custody_ledger SET payload = :p, entry_hash = :h WHERE ref = :r",
        p=payload,
        h=forged,
        r=f"release:{first}",
    )
    _sql(
        seeded,
        "UPDATE serial_units SET patient_id = :p WHERE id = :u",
        p=other_patient,
        u=victim.id,
    )
    # the later release verifies: its walk starts before the forged entry and passes it
    assert _walks(seeded, ch.units(seeded, second)[0]) == ("ok", 1)
    status, _pages = _walks(seeded, _unit(seeded, victim.id))
    assert status == "integrity_failure"
