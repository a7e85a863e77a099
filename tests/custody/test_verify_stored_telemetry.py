"""A batch record's telemetry is stored as the canonical JSON its signed hash covers, and a
first scan of a batch hashes that stored text as it is instead of decoding and re-encoding
thousands of readings (production `CanonicalJSON`, `QualityService.signature_valid`). What
the stored text is compared against is the QP signature's record hash (itself checked
against the signed release entry in the custody ledger): a record changed after release,
through the application or behind its back, is still caught at dispense, by a server process
that has not checked the batch before (a fresh App on the same database, empty caches, as
after a restart: a change made with SQL keeps `row_version`, which the per-process cache
keys on). A record whose telemetry is stored otherwise (written before, or rewritten) is
checked the full way and answers as before. Both databases."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import event, text
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch

from nearfab.bootstrap import App
from nearfab.common.clock import ManualClock
from nearfab.common.errors import Refused
from nearfab.custody import SerialUnit, Verification, VerifyStatus


def _one_released_batch(app: App) -> str:
    batch_id, _ = ch.released_batch(app)
    return batch_id


world = fh.world_fixture(_one_released_batch)


@pytest.fixture
def seeded(world: fh.Built) -> App:
    app: App = world.app
    return app


@pytest.fixture
def released(world: fh.Built) -> tuple[str, list[SerialUnit]]:
    return world.data, ch.units(world.app, world.data)


flushed_verification_log = ch.flushed_verification_log


@pytest.fixture
def restarted(seeded: App, clock: ManualClock) -> Iterator[list[App]]:
    """Fresh Apps on the seeded database, one per call of `_fresh`: a server process after a
    restart (no signature checked yet). Disposed at the end."""
    made: list[App] = []
    yield made
    for app in made:
        app.custody.flush_verification_log()
        app.engine.dispose()


def _fresh(seeded: App, clock: ManualClock, made: list[App]) -> App:
    url = seeded.engine.url.render_as_string(hide_password=False)
    app: App = fh._build(url, seeded.settings.data_dir, clock)
    made.append(app)
    return app


def _sql(app: App, statement: str, **params: object) -> None:
    """An edit behind the application's back: plain SQL, `row_version` kept."""
    with app.engine.begin() as conn:
        result = conn.execute(text(statement), params)
        assert result.rowcount == 1, statement  # type: ignore[attr-defined]


def _stored(app: App, batch_id: str) -> str:
    """The telemetry column's text as the database holds it."""
    with app.engine.connect() as conn:
        value = conn.execute(
            text("SELECT CAST(telemetry AS TEXT) FROM batch_records WHERE id = :b"), {"b": batch_id}
        ).scalar_one()
    assert isinstance(value, str)
    return value


def _canonical(value: object) -> str:
    """Canonical JSON written out with the standard library (RFC 8785's ordering and
    separators for these values), not with nearfab's helper."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_TRANSACTION = ("SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN", "COMMIT")


def _verify(app: App, unit: SerialUnit) -> tuple[Verification, int]:
    """A scan of the pack, and how many statements it ran on this thread, transaction
    control aside (the group-commit log writer runs on its own thread)."""
    me = threading.get_ident()
    count = [0]

    def counted(_conn: object, _cursor: object, sql: str, *_args: object) -> None:
        if threading.get_ident() == me and not sql.lstrip().upper().startswith(_TRANSACTION):
            count[0] += 1

    actor = fh.actor(app, "pharmacist")
    with app.uow() as uow:
        event.listen(app.engine, "before_cursor_execute", counted)
        try:
            answer = app.custody.verify(uow, actor, scan=ch.scan(unit))
        finally:
            event.remove(app.engine, "before_cursor_execute", counted)
    return answer, count[0]


def test_the_telemetry_is_stored_as_the_canonical_json_its_signed_hash_covers(
    seeded: App, released: tuple[str, list[SerialUnit]]
) -> None:
    batch_id, _ = released
    stored = _stored(seeded, batch_id)
    readings = json.loads(stored)
    assert len(readings) > 100  # thousands of values: what a first scan no longer re-encodes
    assert stored == _canonical(readings)
    # the hash the QP's signature bound (through the record's content) is the stored text's
    with seeded.uow() as uow:
        content = seeded.production.get(uow, batch_id).content()
    assert content["telemetry_sha256"] == hashlib.sha256(stored.encode("utf-8")).hexdigest()


def test_a_first_scan_hashes_the_stored_text_and_a_good_pack_is_ok(
    seeded: App, released: tuple[str, list[SerialUnit]]
) -> None:
    _, packs = released
    answer, statements = _verify(seeded, packs[0])  # the batch's first scan in this process
    assert answer.status == VerifyStatus.OK
    # the pack (with its record, telemetry as text) and the signed rows: the telemetry is
    # not read again decoded (tests/custody/test_statement_counts.py counts the same two)
    assert statements == 2


@pytest.mark.parametrize("canonical", [True, False], ids=["canonical", "other-form"])
def test_telemetry_changed_behind_the_application_after_release_is_caught(
    seeded: App,
    released: tuple[str, list[SerialUnit]],
    clock: ManualClock,
    restarted: list[App],
    canonical: bool,
) -> None:
    """One reading changed by 1.0 in the stored text, written canonically (the text's own
    hash then differs from the signed one) or in another form: either way the first scan in
    a fresh process says the record no longer matches the signature, and dispense refuses."""
    batch_id, packs = released
    readings = json.loads(_stored(seeded, batch_id))
    value = next(i for i, item in enumerate(readings[0]) if isinstance(item, float))
    readings[0][value] += 1.0
    changed = _canonical(readings) if canonical else json.dumps(readings)
    _sql(seeded, "UPDATE batch_records SET telemetry = :t WHERE id = :b", t=changed, b=batch_id)
    app = _fresh(seeded, clock, restarted)
    answer, _ = _verify(app, packs[0])
    assert answer.status == VerifyStatus.NOT_RELEASED
    assert "signature" in answer.message
    with pytest.raises(Refused) as refused:
        ch.dispense(app, packs[0])
    assert refused.value.code == "record_changed"


def test_another_part_of_the_record_changed_behind_the_application_is_caught(
    seeded: App,
    released: tuple[str, list[SerialUnit]],
    clock: ManualClock,
    restarted: list[App],
) -> None:
    """The telemetry untouched (its stored text still hashes to the signed value), the mass
    of material used halved with SQL: the rest of the record is still part of what is hashed."""
    batch_id, packs = released
    _sql(
        seeded,
        "UPDATE batch_records SET material_used_g = material_used_g / 2 WHERE id = :b",
        b=batch_id,
    )
    answer, _ = _verify(_fresh(seeded, clock, restarted), packs[0])
    assert answer.status == VerifyStatus.NOT_RELEASED


def test_a_record_changed_through_the_application_is_caught(
    seeded: App,
    released: tuple[str, list[SerialUnit]],
    clock: ManualClock,
    restarted: list[App],
) -> None:
    """Telemetry edited through the ORM (stored canonically again, its row_version bumped)."""
    batch_id, packs = released
    readings = json.loads(_stored(seeded, batch_id))
    readings.pop()
    fh.edit(seeded, fh.BatchRecord, batch_id, telemetry=readings)
    assert _stored(seeded, batch_id) == _canonical(readings)
    answer, _ = _verify(_fresh(seeded, clock, restarted), packs[0])
    assert answer.status == VerifyStatus.NOT_RELEASED
    assert _verify(seeded, packs[0])[0].status == VerifyStatus.NOT_RELEASED


def test_the_same_readings_stored_in_another_form_are_checked_the_full_way(
    seeded: App, released: tuple[str, list[SerialUnit]]
) -> None:
    """A record whose telemetry text is not canonical (as records stored before were: the
    JSON type's own spacing and escaping) holds the same readings: the stored text's hash
    does not match, the check decodes the readings (a statement more) and the pack is ok."""
    batch_id, packs = released
    readings = json.loads(_stored(seeded, batch_id))
    older = json.dumps(readings)  # ", " and ": ", ASCII escapes: the JSON type's default
    assert older != _canonical(readings)
    _sql(seeded, "UPDATE batch_records SET telemetry = :t WHERE id = :b", t=older, b=batch_id)
    assert _stored(seeded, batch_id) == older
    answer, statements = _verify(seeded, packs[0])  # the batch's first scan in this process
    assert answer.status == VerifyStatus.OK
    assert statements == 3  # the pack, the signed rows, and the telemetry read decoded
