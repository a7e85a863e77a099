"""Security review of three signed inputs of the network (docs/replication.md, "Release across
the network", "Anchoring", "Registering a site's keys after the fact"; docs/deployment.md,
"Certificates between nodes"), attacked as an adversary would:

1. the site's signed ledger entry naming each release dossier it sends, which the control's QP
   needs (`ControlReleases._check_as_sent` / `_site_signed`);
2. the anchors of an origin (`ReplicationService.anchor`, `inbox_status`);
3. a site's ledger keys bound to the site by the network CA (custody keycerts / sitekeys).

Each test is one attack, through the real nodes (`nodes`: site node GSTT-PH and control node
CTRL, each its own SQLite database) and the helpers of the neighbouring attack files. What is
expected comes from the documents (the refusal codes and rules they state, X.509's meaning of
basic constraints and extended key usage, RFC 5280), never from the code's own output."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from sqlalchemy import delete, select, update
from tests import flow_helpers as fh
from tests.identity.test_audit_chain import lift_triggers
from tests.replication.test_handover_attacks import deliver_rechained
from tests.replication.test_key_certificates import (
    CERT_FROM,
    CERT_UNTIL,
    Issued,
    World,
    bundle,
    held_at_control,
    held_unchecked,
    import_at_control,
    issue,
    world,
)
from tests.replication.test_node_keys import raw
from tests.replication.test_release_across import (
    canonical_sha256,
    decide,
    deliver,
    releases_of,
    site_keys_known,
    unsent,
)
from tests.replication.test_release_attacks import (
    dossier_held,
    made_at_site,
    remote_decisions,
    send,
    signatures_at,
    unready_at_site,
)
from tests.replication.test_replication_mqtt import (
    _forged,
    nodes,
    register_site_keys,
    repl,
    some_work,
)

from nearfab.bootstrap import App
from nearfab.common.errors import Refused, ValidationFailed
from nearfab.custody import (
    LedgerKind,
    SiteKey,
    export_site_keys,
    import_certified_site_keys,
    import_site_keys,
    parse_site_keys,
)
from nearfab.identity import AuditAction, AuditEntry, audit, system_actor
from nearfab.replication.capture import DOSSIER_ENTITY
from nearfab.replication.models import InboxRecord

__all__ = [
    "dossier_held",
    "held_unchecked",
    "made_at_site",
    "nodes",
    "unready_at_site",
    "world",
]


# --- 1. the site's signature on the dossier it sent ------------------------------------------


def dossier_rows(site: App, batch_id: str) -> list[dict[str, Any]]:
    """The `new` of each audit row by which the site sent a dossier of this batch, oldest
    first (read from the site's own audit table)."""
    with site.uow() as uow:
        rows = uow.session.scalars(
            select(AuditEntry)
            .where(AuditEntry.entity_type == DOSSIER_ENTITY, AuditEntry.entity_id == batch_id)
            .order_by(AuditEntry.seq)
        ).all()
        return [copy.deepcopy(dict(r.new or {})) for r in rows]


def test_an_older_signed_dossier_replayed_as_the_newest_is_not_signed(
    dossier_held: tuple[App, App, str],
) -> None:
    """The site sent a dossier, then a newer one (a deviation reported at the site since). A
    man in the middle rewrites the newer dossier's audit row and record on the broker into the
    older dossier, every plain hash after them redone: the older one was genuinely signed by
    the site, so its entry is held and verifies. But the site signs a dossier in the
    transaction that sends it, so its entry follows the dossier's record; the older one's comes
    before the replayed record (docs: the QP signs the newest dossier the site sent): not
    signed."""
    site, control, batch_id = dossier_held  # the first dossier, held at the control
    with site.uow() as uow:
        site.quality.records.open_deviation(
            uow, fh.actor(site, "pharmacist"), batch_id, description="cracked tablet"
        )
    send(site)  # the second dossier, naming the deviation
    older, newer = dossier_rows(site, batch_id)
    assert older["shown_hash"] != newer["shown_hash"] and newer["content"]["deviations"]

    def replay(kind: str, payload: dict[str, Any]) -> None:
        if kind == "audit" and payload.get("entity_type") == DOSSIER_ENTITY:
            assert payload["new"]["shown_hash"] == newer["shown_hash"]
            payload["new"] = copy.deepcopy(older)
        elif kind == "dossier":
            kept = {"audit_seq": payload["audit_seq"], "sent_at": payload["sent_at"]}
            payload.clear()
            payload.update({**copy.deepcopy(older), **kept})

    deliver_rechained(site, control, replay)
    with control.uow() as uow:
        held = releases_of(control).newest(uow, batch_id)
        (status,) = [
            s for s in repl(control).inbox_status(uow) if s.origin_site == held.origin_site
        ]
    assert held.dossier["shown_hash"] == older["shown_hash"]  # the replay is what is shown
    assert not (status.forks or status.altered or status.chain_problems), status
    before = signatures_at(control)
    with pytest.raises(Refused) as refused:
        decide(control, batch_id, shown_hash=older["shown_hash"])
    assert (refused.value.code, refused.value.field) == ("dossier_not_verified", "dossier")
    assert "replayed, not the newest dossier the site sent" in str(refused.value)
    fh.assert_refusal_audited(control, refused.value, "batch", batch_id)
    assert signatures_at(control) == before and remote_decisions(control, batch_id) == []


def test_a_dossier_entry_signed_with_another_sites_key_is_not_the_sites_signature(
    unready_at_site: tuple[App, App, str],
) -> None:
    """Whoever holds Manchester's ledger key (known at the control as Manchester's) signs, in
    GSTT-PH's chain, an entry naming a dossier GSTT-PH never sent (its blockers dropped). The
    signature is valid Ed25519, but by another site's key (docs, "Signatures": a signature by
    another site's key is a chain problem): the control's QP is refused."""
    site, control, batch_id = unready_at_site
    man = fh.site_id(site, "MAN-PH")
    with site.uow() as uow:  # Manchester's key, its private half where the attacker is
        man_key = site.custody_chain.ledger.rotate(
            uow, system_actor("attacker"), man, reason="Manchester's key, stolen"
        ).key_id
    with site.uow() as uow:
        man_keys = export_site_keys(uow.session, man)
    with control.uow() as uow:  # known at the control as Manchester's, as it should be
        import_site_keys(
            uow,
            system_actor("provisioning"),
            parse_site_keys(man_keys),
            own_site_id=repl(control).site_id,
            reason="Manchester's keys",
        )
    with site.uow() as uow:
        forged = {**site.quality.remote.dossier(uow, batch_id), "blockers": []}
        row = audit(
            uow,
            system_actor("replication"),
            AuditAction.CREATE,
            DOSSIER_ENTITY,
            batch_id,
            new=forged,
            reason="sent",
            site_id=repl(site).site_id,
        )
        key = uow.session.get(SiteKey, man_key)
        assert key is not None and key.site_id == man
        site.custody_chain.ledger.append(
            uow,
            repl(site).site_id,
            LedgerKind.DOSSIER,
            f"release_dossier:{batch_id}",
            {"sha256": canonical_sha256(row.new), "batch_id": batch_id},
            key=key,
        )
        uow.commit()
    deliver(site, control)  # GSTT-PH's own keys registered at the control too
    with control.uow() as uow:
        held = releases_of(control).newest(uow, batch_id)
    assert held.dossier["blockers"] == []
    before = signatures_at(control)
    with pytest.raises(Refused) as refused:
        decide(control, batch_id, shown_hash=held.dossier["shown_hash"])
    assert refused.value.code == "dossier_not_verified"
    assert f"not valid for key {man_key}" in str(refused.value)
    assert signatures_at(control) == before and remote_decisions(control, batch_id) == []


def test_a_dossier_signed_by_an_unknown_key_stays_unsigned_after_an_unverified_anchor(
    made_at_site: tuple[App, App, str],
) -> None:
    """The control anchors the site's origin with `--allow-unverified` (its key not held:
    the anchor says its signatures were unchecked). That is not evidence: the QP is still
    refused while the key is unknown (docs: `dossier_not_verified`, naming the key)."""
    site, control, batch_id = made_at_site
    send(site)
    records = unsent(site)
    with control.uow() as uow:  # delivered without registering the site's keys
        repl(control).apply(uow, [r.to_message() for r in records])
    with control.uow() as uow:
        done = repl(control).anchor(uow, system_actor("replication"), allow_unverified=True)
    (body,) = done["anchored"].values()
    assert body["allowed_unverified"] is True and body["unverified_keys"]
    with control.uow() as uow:
        held = releases_of(control).newest(uow, batch_id)
    with pytest.raises(Refused) as refused:
        decide(control, batch_id, shown_hash=held.dossier["shown_hash"])
    assert refused.value.code == "dossier_not_verified"
    assert body["unverified_keys"][0] in str(refused.value)
    assert remote_decisions(control, batch_id) == []


def test_a_dossier_signed_before_the_site_rotated_its_key_is_still_the_sites(
    dossier_held: tuple[App, App, str],
) -> None:
    """Not an attack but its boundary: the site signs a dossier with its key, then rotates it
    (the rotation signed by the old key introduces the new one). The dossier was signed by a
    key that was the site's when it signed; the control's QP signs it. An entry the old key
    signs after the rotation would not be (docs, "Signatures")."""
    site, control, batch_id = dossier_held
    with site.uow() as uow:
        site.custody_chain.ledger.rotate(
            uow, system_actor("site admin"), repl(site).site_id, reason="yearly rotation"
        )
    records = unsent(site)
    with control.uow() as uow:  # the rotation arrives before the QP decides
        repl(control).apply(uow, [r.to_message() for r in records])
    with control.uow() as uow:
        (status,) = repl(control).inbox_status(uow)
    assert status.ok and status.unverified_keys == [], status
    body = decide(control, batch_id)
    assert body["decision"] == "release"


def send_signed_with(site: App, batch_id: str, key_id: str, **changes: Any) -> dict[str, Any]:
    """A dossier of the attacker's making (the real one with `changes`) written as the site's
    own writer writes one (its audit row, the capture's record), with the entry naming it in
    the site's ledger chain signed by the key `key_id` (docs/replication.md: kind `dossier`,
    ref `release_dossier:<batch id>`, body the SHA-256 of the dossier's canonical JSON): what
    a man in the middle holding that key would put on the broker."""
    with site.uow() as uow:
        forged = {**site.quality.remote.dossier(uow, batch_id), **changes}
        row = audit(
            uow,
            system_actor("replication"),
            AuditAction.CREATE,
            DOSSIER_ENTITY,
            batch_id,
            new=forged,
            reason="sent",
            site_id=repl(site).site_id,
        )
        key = uow.session.get(SiteKey, key_id)
        assert key is not None
        site.custody_chain.ledger.append(
            uow,
            repl(site).site_id,
            LedgerKind.DOSSIER,
            f"release_dossier:{batch_id}",
            {"sha256": canonical_sha256(row.new), "batch_id": batch_id},
            key=key,
        )
        uow.commit()
    return forged


def canonical_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def test_a_signed_entry_rewritten_into_a_key_rotation_introduces_no_key(
    nodes: tuple[App, App],
) -> None:
    """A man in the middle takes an entry the site signed (a custody fact), keeps its entry
    hash and signature and rewrites its payload into a key rotation introducing the
    attacker's Ed25519 key; with that key it signs an entry naming a dossier whose blockers it
    dropped. The signature over the entry hash is the site's, but that hash does not cover the
    rotation the entry now carries (docs/custody.md: the hash covers the payload): no key is
    introduced, nothing is signed at the control."""
    site, control = nodes
    some_work(site, 1)  # a custody fact signed with the site's key: ref offline-0
    batch_id = fh.make_batch(site, ready=False)
    site_keys_known(site, control)
    attacker = Ed25519PrivateKey.generate()
    with site.uow() as uow:  # the attacker's key, for the site's writer to sign with below
        uow.session.add(
            SiteKey(
                key_id="lk_attacker",
                site_id=repl(site).site_id,
                public_key=raw(attacker),
                private_key_encrypted=site.custody_chain.ledger.keyring.seal(attacker),
                created_at=site.clock.now(),
                retired_at=site.clock.now(),  # never the site's signing key
            )
        )
        uow.commit()
    send_signed_with(site, batch_id, "lk_attacker", blockers=[])

    def forge(kind: str, payload: dict[str, Any]) -> None:
        if kind == "ledger" and payload["ref"] == "offline-0":
            entry = json.loads(payload["payload"])
            entry.update(
                kind="key",
                ref="key:lk_attacker",
                body={"new_key_id": "lk_attacker", "public_key": raw(attacker).hex()},
            )
            payload.update(kind="key", ref="key:lk_attacker", payload=canonical_text(entry))

    deliver_rechained(site, control, forge)
    with control.uow() as uow:
        held = releases_of(control).newest(uow, batch_id)
    assert held.dossier["blockers"] == []
    before = signatures_at(control)
    with pytest.raises(Refused) as refused:
        decide(control, batch_id, shown_hash=held.dossier["shown_hash"])
    print("MSG", refused.value)
    assert refused.value.code == "dossier_not_verified"
    assert "offline-0" in str(refused.value) or "hash does not match" in str(refused.value)
    assert signatures_at(control) == before and remote_decisions(control, batch_id) == []


@pytest.mark.parametrize("how", ["withheld", "disguised", "relabelled"])
def test_a_rotation_withheld_or_disguised_does_not_let_the_replaced_key_sign(
    unready_at_site: tuple[App, App, str], how: str
) -> None:
    """The site rotated its key (the old one leaked: what rotations are for). The man in the
    middle holding the old key signs an entry naming a dossier whose blockers it dropped, after
    the rotation, and keeps the rotation from the control: it holds it back (a hole before
    the entry), or rewrites it into another kind of entry (its entry hash and signature kept,
    every record hash redone), or only relabels its columns (kind and ref, which the entry
    hash does not cover). docs: the key a rotation replaced signs nothing after it, and
    the entry must be held with every record before it: nothing is signed."""
    site, control, batch_id = unready_at_site
    site_keys_known(site, control)
    (old_key,) = [k["key_id"] for k in export_site_keys_of(site)]
    with site.uow() as uow:
        site.custody_chain.ledger.rotate(
            uow, system_actor("site admin"), repl(site).site_id, reason="the key leaked"
        )
    send_signed_with(site, batch_id, old_key, blockers=[])
    if how == "withheld":
        records = unsent(site)
        (rotation,) = [r for r in records if r.kind == "ledger" and '"kind":"key"' in r.payload]
        with control.uow() as uow:
            repl(control).apply(uow, [r.to_message() for r in records if r.seq != rotation.seq])
    else:

        def disguise(kind: str, payload: dict[str, Any]) -> None:
            if kind == "ledger" and payload["kind"] == "key":
                entry = json.loads(payload["payload"])
                entry.update(kind="epcis", ref="offline-9", body={"step": 9})
                if how == "disguised":  # the payload its hash covers rewritten
                    payload.update(payload=canonical_text(entry))
                payload.update(kind="epcis", ref="offline-9")  # its columns, not hashed

        deliver_rechained(site, control, disguise)
    with control.uow() as uow:
        held = releases_of(control).newest(uow, batch_id)
    assert held.dossier["blockers"] == []
    before = signatures_at(control)
    with pytest.raises(Refused) as refused:
        decide(control, batch_id, shown_hash=held.dossier["shown_hash"])
    assert refused.value.code == "dossier_not_verified"
    assert signatures_at(control) == before and remote_decisions(control, batch_id) == []


def export_site_keys_of(site: App) -> list[dict[str, Any]]:
    with site.uow() as uow:
        return list(export_site_keys(uow.session, repl(site).site_id)["keys"])


def test_a_fork_of_the_origin_after_the_signed_entry_stops_the_decision(
    dossier_held: tuple[App, App, str],
) -> None:
    """The dossier and its signed entry are held; later, a second record arrives for a seq
    already held (another payload, its plain hash redone): two versions of the site's history.
    docs: a decision is refused while that origin has a fork named."""
    site, control, batch_id = dossier_held
    some_work(site, 1)
    later = unsent(site)
    forked = _forged(later[0], id=f"{later[0].origin_site}/audit:999999", source_ref="audit:999999")
    with control.uow() as uow:
        repl(control).apply(uow, [r.to_message() for r in later])
    with control.uow() as uow:
        repl(control).apply(uow, [forked.to_message()])
    with control.uow() as uow:
        (status,) = repl(control).inbox_status(uow)
    assert status.forks, status
    with pytest.raises(Refused) as refused:
        decide(control, batch_id)
    assert refused.value.code == "dossier_not_verified" and "fork" in str(refused.value)
    assert remote_decisions(control, batch_id) == []


# --- 2. anchors ---------------------------------------------------------------------------


def anchored_origin(site: App, control: App) -> tuple[str, list[Any]]:
    some_work(site, 3)
    records = unsent(site)
    with control.uow() as uow:
        repl(control).apply(uow, [r.to_message() for r in records])
    register_site_keys(site, control)
    with control.uow() as uow:
        done = repl(control).anchor(uow, system_actor("replication"))
    origin = repl(site).site_id
    assert done["anchored"][origin]["seq"] == records[-1].seq
    return origin, records


def test_an_anchor_audit_row_edited_in_the_database_does_not_hide_a_cut_tail(
    nodes: tuple[App, App],
) -> None:
    """Someone with the database's superuser rights cuts the origin's last records and edits
    the anchor's audit row to say it ended two records earlier, its hash that record's. The
    anchor is also an entry of the control's ledger chain signed with its key (docs,
    "Anchoring"): the cut is still named."""
    site, control = nodes
    origin, records = anchored_origin(site, control)
    last, kept = records[-1], records[-3]
    lift_triggers(control)
    with control.uow() as uow:
        row = uow.session.scalars(
            select(AuditEntry).where(
                AuditEntry.entity_type == "replication_origin", AuditEntry.entity_id == origin
            )
        ).one()
        edited = {**(row.new or {}), "seq": kept.seq, "record_hash": kept.record_hash}
        uow.session.execute(update(AuditEntry).where(AuditEntry.id == row.id).values(new=edited))
        uow.session.execute(
            delete(InboxRecord).where(InboxRecord.origin_site == origin, InboxRecord.seq > kept.seq)
        )
        uow.commit()
    with control.uow() as uow:
        (status,) = [s for s in repl(control).inbox_status(uow) if s.origin_site == origin]
    assert status.gaps == [] and not status.ok
    assert any(
        f"seq {last.seq}: anchored here on" in p and "no longer held" in p
        for p in status.chain_problems
    ), status.chain_problems


def test_an_anchor_whose_seq_is_blanked_in_the_database_still_holds(
    nodes: tuple[App, App],
) -> None:
    """The same with the anchor row's `seq` made a string (an anchor the audit row no longer
    states as a number would be skipped): the signed entry still holds the anchor."""
    site, control = nodes
    origin, records = anchored_origin(site, control)
    lift_triggers(control)
    with control.uow() as uow:
        row = uow.session.scalars(
            select(AuditEntry).where(
                AuditEntry.entity_type == "replication_origin", AuditEntry.entity_id == origin
            )
        ).one()
        edited = {**(row.new or {}), "seq": str(records[-1].seq)}
        uow.session.execute(update(AuditEntry).where(AuditEntry.id == row.id).values(new=edited))
        uow.session.execute(
            delete(InboxRecord).where(InboxRecord.origin_site == origin, InboxRecord.seq > 1)
        )
        uow.commit()
    with control.uow() as uow:
        (status,) = [s for s in repl(control).inbox_status(uow) if s.origin_site == origin]
    assert not status.ok
    assert any(f"seq {records[-1].seq}: anchored here on" in p for p in status.chain_problems)


# --- 3. certificates binding a site's keys -----------------------------------------------------


def leaf(
    ca: Issued,
    common_name: str,
    *,
    is_ca: bool = False,
    usages: list[x509.ObjectIdentifier] | None = None,
    extra: list[x509.ExtensionType] | None = None,
) -> Issued:
    """A certificate signed by `ca` (EC P-256), its basic constraints and, if given, its
    extended key usage as the test says."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(CERT_FROM)
        .not_valid_after(CERT_UNTIL)
        .add_extension(
            x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True
        )
    )
    if usages is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    for ext in extra or []:
        builder = builder.add_extension(ext, critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def refused_import(w: World, document: dict[str, Any]) -> Refused | ValidationFailed:
    before = held_at_control(w.control)
    with pytest.raises((Refused, ValidationFailed)) as refused:
        import_at_control(w, document)
    assert held_at_control(w.control) == before  # nothing written
    return refused.value


def test_a_certificate_below_an_intermediate_the_bundle_does_not_carry_is_refused(
    world: World,
) -> None:
    """deployment.md: a path to the network CA is followed only through the intermediates
    the bundle carries (test_key_revocation.py tests a carried chain). An intermediate CA
    the network CA signed issues a certificate named GSTT-PH, sent without the intermediate:
    not taken; nor is the intermediate itself (a CA's certificate) as a site's."""
    w = world
    intermediate = leaf(w.network, "nearfab sub-CA", is_ca=True)
    below = leaf(intermediate, "GSTT-PH")
    got = refused_import(w, bundle(w.text(), below))
    assert (got.code, got.field) == ("certificate_not_trusted", "certificate")
    as_leaf = leaf(w.network, "GSTT-PH", is_ca=True)  # CA:TRUE, named as the site
    got = refused_import(w, bundle(w.text(), as_leaf))
    assert (got.code, got.field) == ("certificate_not_trusted", "certificate")


def test_a_tls_server_certificate_does_not_certify_a_sites_keys(world: World) -> None:
    """deployment.md: a site's certificate is its bridge's TLS client certificate; the control
    broker's is a server certificate. RFC 5280 4.2.1.12: with an extended key usage the key is
    for those purposes only, so a certificate for server authentication alone (whatever its
    common name: an operator naming the broker's certificate after a site) is not a node's."""
    w = world
    server = leaf(w.network, "GSTT-PH", usages=[ExtendedKeyUsageOID.SERVER_AUTH])
    got = refused_import(w, bundle(w.text(), server))
    assert (got.code, got.field) == ("certificate_not_trusted", "certificate")
    client = leaf(w.network, "GSTT-PH", usages=[ExtendedKeyUsageOID.CLIENT_AUTH])
    assert import_at_control(w, bundle(w.text(), client)) != []  # the bridge's: taken


def test_a_look_alike_common_name_names_no_site(world: World) -> None:
    """A certificate for "GSTT-РН" (Cyrillic Er and En), issued by the network CA to another
    party, is not GSTT-PH's."""
    w = world
    got = refused_import(w, bundle(w.text(), issue(w.network, "GSTT-\u0420\u041d")))
    assert (got.code, got.field) == ("certificate_for_other_site", "certificate")
    got = refused_import(w, bundle(w.text(), issue(w.network, "gstt-ph")))
    assert (got.code, got.field) == ("certificate_for_other_site", "certificate")


def test_a_common_name_that_is_one_sites_code_and_another_sites_id_certifies_neither(
    world: World,
) -> None:
    """A site is created whose code is GSTT-PH's id (codes are free text); the CA issues it
    its certificate, common name its code. That certificate must not certify GSTT-PH's keys:
    a common name naming two sites names none (deployment.md: the common name is the site's
    code or id, so it must name one site)."""
    w = world
    with w.control.uow() as uow:
        w.control.network.create_site(
            uow, fh.actor(w.control, "admin"), code=w.origin, name="Look-alike", kind="clinic"
        )
    theirs = issue(w.network, w.origin)
    got = refused_import(w, bundle(w.text(), theirs))
    assert (got.code, got.field) == ("certificate_for_other_site", "certificate")


def test_a_statement_listing_a_key_id_held_as_another_sites_key_takes_nothing_over(
    world: World,
) -> None:
    """GSTT-PH's certified statement lists, as its own, a key id the control holds as its own
    site's key (with the attacker's public key): `key_id_taken`, nothing written."""
    w = world
    control_id = repl(w.control).site_id
    with w.control.uow() as uow:
        held = w.control.custody_chain.ledger.rotate(
            uow, system_actor("provisioning"), control_id, reason="the control's key"
        ).key_id
    stolen = {
        **w.statement["keys"][0],
        "key_id": held,
        "public_key": raw(Ed25519PrivateKey.generate()).hex(),
    }
    got = refused_import(w, bundle(w.text(keys=[*w.statement["keys"], stolen]), w.site_cert))
    assert (got.code, got.field) == ("key_id_taken", "key_id")
    with w.control.uow() as uow:
        key = uow.session.get(SiteKey, held)
        assert key is not None and key.site_id == control_id


def test_an_old_statement_replayed_after_a_rotation_brings_no_retired_key_back(
    world: World,
) -> None:
    """The site rotates its key; the control registers the new statement (the old key
    retired). The statement signed before the rotation, replayed, changes nothing: the old
    key stays retired, and an entry it signs after the rotation is still a chain problem."""
    w = world
    old = bundle(w.text(), w.site_cert)  # signed before the rotation
    (old_key,) = [k["key_id"] for k in w.statement["keys"]]
    with w.site.uow() as uow:
        w.site.custody_chain.ledger.rotate(
            uow, system_actor("site admin"), w.origin, reason="yearly rotation"
        )
    with w.site.uow() as uow:
        now = export_site_keys(uow.session, w.origin)
    now["signed_at"] = w.site.clock.now().isoformat()
    import_at_control(w, bundle(json.dumps(now), w.site_cert))
    with w.control.uow() as uow:
        retired = uow.session.get(SiteKey, old_key)
        assert retired is not None and retired.retired_at is not None
        retired_at = retired.retired_at
    with w.control.uow() as uow:
        again = import_certified_site_keys(
            uow,
            system_actor("provisioning"),
            json.loads(json.dumps(old)),
            network_ca_pem=w.network.cert_pem(),
            own_site_id=repl(w.control).site_id,
            reason="replayed",
        )
    assert again.registered == []
    with w.control.uow() as uow:
        key = uow.session.get(SiteKey, old_key)
        assert key is not None and key.retired_at == retired_at


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("certificate", "-----BEGIN CERTIFICATE-----\n" + "A" * 4_000_000, "certificate"),
        (
            "certificate",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "certificate",
        ),
        ("certificate", "\u00e9" * 1000, "certificate"),
        ("signature", "not base64 !" * 100_000, "signature"),
        ("statement", "", "statement"),
    ],
)
def test_a_huge_or_malformed_bundle_is_named_and_writes_nothing(
    world: World, name: str, value: str, field: str
) -> None:
    w = world
    document = {**bundle(w.text(), w.site_cert), name: value}
    got = refused_import(w, document)
    assert isinstance(got, ValidationFailed) and got.field == field, got


def test_a_certificate_whose_extension_does_not_parse_is_named(world: World) -> None:
    """The CA signed a certificate whose basic constraints are not DER (a broken issuing
    tool): a clear error naming the certificate, not a crash, nothing written."""
    w = world
    broken = leaf(
        w.network,
        "GSTT-PH",
        extra=[x509.UnrecognizedExtension(ExtensionOID.KEY_USAGE, b"\x00\x01garbage")],
    )
    got = refused_import(w, bundle(w.text(), broken))
    assert got.field == "certificate"
