"""Before a cell product's run: the clinician's eligibility and consent records (e-signed) and
the collection recorded with the patient's pseudonym and the collection bag's DIN, through the
scheduling service (the same calls as the API and the CLI)."""

from __future__ import annotations

from tests import flow_helpers as fh
from tests.conftest import TEST_PASSWORD

from nearfab.bootstrap import App
from nearfab.scheduling.models import CollectionAppointment

# ISBT 128 ST-001 Appendix A: DIN G1234 17 654321 (flags 00), keyboard entry check character A
DIN_A = "=G12341765432100"
CONSENT_FORM = "CAR-T consent form v3.1 (2026-09)"


def sign_pre_collection(app: App, order_id: str, username: str = "clinician") -> None:
    """Eligibility and consent, each signed by the ordering site's clinician."""
    for kind, reference in (
        ("eligibility", "apheresis eligibility assessment EA-2026-117"),
        ("consent", CONSENT_FORM),
    ):
        with app.uow() as uow:
            app.scheduling.record_pre_collection(
                uow,
                fh.actor(app, username),
                order_id,
                kind=kind,
                reference=reference,
                statement=f"{kind} confirmed with the patient",
                password=TEST_PASSWORD,
                username=username,
            )


def patient_ref(app: App, order_id: str) -> str:
    with app.uow() as uow:
        order = app.orders.get(uow, order_id)
        return app.orders.patient(uow, order.patient_id).ref


def record_collection(app: App, order_id: str, din: str = DIN_A) -> CollectionAppointment:
    """Sign eligibility and consent, then record the collection with the patient's pseudonym
    and `din` as scanned off the bag."""
    sign_pre_collection(app, order_id)
    with app.uow() as uow:
        row = app.scheduling.record_collected(
            uow,
            fh.actor(app, "clinician"),
            order_id,
            identifier=din,
            patient=patient_ref(app, order_id),
        )
        uow.session.expunge(row)
        return row
