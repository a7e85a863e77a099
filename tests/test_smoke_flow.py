"""Temporary smoke test while the suite is built."""

from nearfab.bootstrap import App


def test_seed(seeded: App) -> None:
    with seeded.uow() as uow:
        assert len(seeded.network.list_sites(uow)) == 4
