"""The production gate: whether a product may be made at a site, on a machine, by an operator,
now (effective and approved master file, listed and active site, qualified machine, trained
operator at the site). Checked when a ticket is issued and again when a batch starts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nearfab.common.errors import Refused
from nearfab.masterfiles import MasterFileService, MasterFileStatus
from nearfab.network import NetworkService, SiteStatus
from nearfab.orders import OrderService
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.masterfiles import MasterFile
    from nearfab.network import Machine, Site
    from nearfab.scheduling import Job


class ProductionGate:
    def __init__(
        self, network: NetworkService, master_files: MasterFileService, orders: OrderService
    ) -> None:
        self._network = network
        self.node = network.node  # the process's node role: site node or control (common/node.py)
        self._master_files = master_files
        self._orders = orders

    def check(
        self,
        uow: UnitOfWork,
        mf: MasterFile,
        site: Site,
        machine: Machine,
        operator_id: str | None = None,
    ) -> None:
        """Raise Refused (each with its own code) unless this product may be made here, now."""
        if mf.status != MasterFileStatus.EFFECTIVE.value:
            raise Refused(
                f"master file {mf.code} v{mf.version} is {mf.status}; production needs an "
                "approved, effective master file",
                field="master_file",
                code="no_effective_master_file",
            )
        if not self._master_files.approval_is_valid(uow, mf):
            raise Refused(
                f"master file {mf.code} v{mf.version} no longer matches its QP approval signature",
                field="master_file",
                code="no_effective_master_file",
            )
        if site.id not in mf.allowed_site_ids:
            raise Refused(
                f"site {site.code} is not listed in master file {mf.code}",
                field="site",
                code="site_not_listed",
            )
        if site.status != SiteStatus.ACTIVE.value:
            raise Refused(
                f"site {site.code} is {site.status}, not active",
                field="site",
                code="site_not_active",
            )
        held = self._network.site_hold(uow, site.id, mf.code)
        if held is not None:
            raise Refused(held, field="site", code="site_suspended")
        if machine.site_id != site.id:
            raise Refused(
                f"machine {machine.name} is not at site {site.code}",
                field="machine",
                code="machine_not_at_site",
            )
        if not self._network.is_qualified(uow, machine.id, mf.code):
            raise Refused(
                f"machine {machine.name} is not qualified for {mf.code}",
                field="machine",
                code="machine_not_qualified",
            )
        if operator_id is not None and self._network.home_site_of(uow, operator_id) != site.id:
            raise Refused(
                f"operator {operator_id} does not work at site {site.code}",
                field="operator",
                code="operator_not_at_site",
            )
        if operator_id is not None and not self._network.is_trained(uow, operator_id, mf.code):
            raise Refused(
                f"operator {operator_id} is not trained on {mf.code}",
                field="operator",
                code="operator_not_trained",
            )

    def context(self, uow: UnitOfWork, job: Job) -> tuple[MasterFile, Site, Machine]:
        """The master file (of the job's order), site and machine the gate judges."""
        order = self._orders.get(uow, job.order_id)
        mf = self._master_files.get(uow, order.master_file_id)
        return (
            mf,
            self._network.get_site(uow, job.site_id),
            self._network.get_machine(uow, job.machine_id),
        )
