import time
from nearfab.bootstrap import App
from tests import flow_helpers as fh


def test_probe(seeded: App) -> None:
    t = time.perf_counter()
    b = fh.make_batch(seeded)
    print("make_batch", time.perf_counter() - t)
    with seeded.uow() as uow:
        r = seeded.quality.get_review(uow, b)
        print(r.proposed_decision, r.proposal["reasons"])
        bt = seeded.production.get(uow, b)
        print(bt.telemetry_summary, bt.unit_masses_mg, bt.design)
        print([(s.name, s.actor_name, s.at) for s in seeded.production.steps(uow, b)])
        print([(u.gtin, u.serial, u.batch_number, u.expiry, u.status) for u in seeded.custody.units_of_batch(uow, b)])
    t = time.perf_counter()
    fh.release(seeded, b)
    print("release", time.perf_counter() - t)
