"""OrderService.touch bumps an order's version even when nothing else changes, so two units of
work that each touch the same order (two last packs of an order dispensed at once) cannot both
commit: the second is a Conflict (the order's row_version, optimistic locking)."""

from __future__ import annotations

import pytest
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.errors import Conflict
from nearfab.orders import Order


def test_two_touches_of_one_order_conflict(seeded: App) -> None:
    order_id = fh.submit(seeded)
    with pytest.raises(Conflict), seeded.uow() as first:
        order = first.session.get(Order, order_id)
        assert order is not None
        version = order.row_version
        with seeded.uow() as second:  # another worker gets there first
            other = second.session.get(Order, order_id)
            assert other is not None
            seeded.orders.touch(second, other)
            second.commit()
        seeded.orders.touch(first, order)  # the clock has not moved: still a new version
        first.commit()
    with seeded.uow() as uow:
        stored = uow.session.get(Order, order_id)
        assert stored is not None and stored.row_version == version + 1
