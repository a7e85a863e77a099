import math
from datetime import timedelta
import pytest
from nearfab.bootstrap import App
from nearfab.identity import system_actor, audit_trail
from nearfab.common.errors import DomainError

def test_probe_long_username(app: App) -> None:
    name = "x" * 70
    try:
        with app.uow() as uow:
            app.users.authenticate(uow, name, "whatever-pw")
    except Exception as exc:
        print("LOGIN", type(exc).__name__, str(exc)[:100])
    with app.uow() as uow:
        print("TRAIL", [(e.action, e.entity_id[:10]) for e in audit_trail(uow, "user", name)])
    try:
        with app.uow() as uow:
            app.users.create_user(uow, system_actor("t"), username=name, full_name="X", roles=["qp"], password="abcdefghij")
    except Exception as exc:
        print("CREATE", type(exc).__name__, str(exc)[:100])

def test_probe_nan_lot(app: App) -> None:
    boot = system_actor("t")
    with app.uow() as uow:
        site = app.network.create_site(uow, boot, code="S1", name="s", kind="clinic")
    from datetime import date
    try:
        with app.uow() as uow:
            lot = app.materials.receive_lot(uow, boot, lot_number="L1", material_code="M", description="d", site_id=site.id, supplier="s", expiry=date(2027,1,1), quantity_g=math.nan, drug_loading=0.5)
        print("NAN accepted", lot.quantity_g)
        with app.uow() as uow:
            print("NAN read", app.materials.get(uow, lot.id).quantity_g)
    except Exception as exc:
        print("NAN", type(exc).__name__, str(exc)[:100])
