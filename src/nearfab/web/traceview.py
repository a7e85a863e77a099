"""The trace as people read it (issue 13 item 7): printed names for user ids, site names for
site ids and GLN locations, times in the site's local time with its zone, a timeline in words
(what happened, who, where, when) and EPCIS rows whose long identifiers are shortened with the
full value one click away.

Only reads: the trace service's answer (custody) is taken as it is; names come from identity's
and network's public reads, so custody code stays as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo

from nearfab.bootstrap import App
from nearfab.identity.reads import users_by_id
from nearfab.network.reads import sites as network_sites
from nearfab.uow import UnitOfWork
from nearfab.web.localtime import local, moment, zone_of

# an EPCIS business step in words (CBV 2.0 bare names; anything else is shown as words)
_STEPS = {
    "creating_class_instance": "Made from its material lot",
    "commissioning": "Serial number assigned (commissioned)",
    "inspecting": "Inspected for release",
    "shipping": "Shipped",
    "receiving": "Received",
    "dispensing": "Dispensed",
    "decommissioning": "Taken out of use (decommissioned)",
    "holding": "Held",
    "destroying": "Destroyed",
    "recalling": "Recalled",
}
_VOCAB_PREFIXES = (
    "urn:epcglobal:cbv:bizstep:",
    "urn:epcglobal:cbv:disp:",
    "https://ref.gs1.org/cbv/BizStep-",
    "https://ref.gs1.org/cbv/Disp-",
    "cbv:BizStep-",
    "cbv:Disp-",
)
_EPC_KEYS = ("parentID", "epcList", "childEPCs", "inputEPCList", "outputEPCList")
_QTY_KEYS = ("quantityList", "childQuantityList", "inputQuantityList", "outputQuantityList")
# the order of a pack's life, for events recorded at the same second
_LIFE = ["creating_class_instance", "commissioning", "inspecting", "shipping", "receiving"]
_LIFE += ["dispensing", "holding", "recalling", "decommissioning", "destroying"]
LONG = 28  # identifiers longer than this are shortened in the table (full value on click)


def bare(value: Any) -> str:
    """A CBV bizStep or disposition without its namespace."""
    text = str(value or "")
    for prefix in _VOCAB_PREFIXES:
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


@dataclass(frozen=True)
class Ident:
    """An identifier as shown: `short` in the cell, `full` behind it (None: short is full)."""

    short: str
    full: str | None = None


@dataclass
class Places:
    """Site names by id, code and GLN location, with each site's zone."""

    app: App
    by_id: dict[str, Any] = field(default_factory=dict)
    by_code: dict[str, Any] = field(default_factory=dict)
    glns: dict[str, Any] = field(default_factory=dict)  # GLN without its check digit -> site

    @classmethod
    def read(cls, app: App, uow: UnitOfWork) -> Places:
        found = network_sites(uow.session)
        return cls(app, {s.id: s for s in found}, {s.code: s for s in found})

    def locate(self, site_id: str | None, gln: str | None) -> None:
        if site_id in self.by_id and gln:
            self.glns[gln[:-1]] = self.by_id[site_id]

    def name(self, site_id: str | None) -> str | None:
        site = self.by_id.get(site_id or "")
        return site.name if site else site_id

    def zone(self, site_id: str | None) -> ZoneInfo:
        site = self.by_id.get(site_id or "")
        return zone_of(self.app.settings, site.code if site else None)

    def at_location(self, location: str | None) -> Any:
        """The site an EPCIS `urn:epc:id:sgln:<company>.<location>.<ext>` names, if known."""
        if not location or not location.startswith("urn:epc:id:sgln:"):
            return None
        parts = location.removeprefix("urn:epc:id:sgln:").split(".")
        return self.glns.get("".join(parts[:2])) if len(parts) == 3 else None


def ident(value: str, places: Places | None = None) -> Ident:
    """A long identifier in a few readable words (GTIN and serial of a GS1 Digital Link, a
    material lot, a site's location, an event hash), else its ends around "…"."""
    if value.startswith("https://id.gs1.org/01/"):
        parts = value.split("/")
        try:
            gtin = parts[parts.index("01") + 1]
            serial = unquote(parts[parts.index("21") + 1])
            return Ident(f"GTIN {gtin} · serial {serial}", value)
        except (ValueError, IndexError):
            pass
    if value.startswith("urn:nearfab:material-lot:"):
        return Ident("material lot " + value.removeprefix("urn:nearfab:material-lot:"), value)
    if value.startswith("urn:nearfab:batch:"):
        return Ident("batch " + value.removeprefix("urn:nearfab:batch:"), value)
    site = places.at_location(value) if places else None
    if site is not None:
        return Ident(site.name, value)
    if value.startswith("urn:epc:id:sgln:"):
        return Ident("location " + value.removeprefix("urn:epc:id:sgln:"), value)
    if value.startswith("ni:///sha-256;"):
        return Ident("event " + value.removeprefix("ni:///sha-256;")[:12] + "…", value)
    if len(value) > LONG:
        return Ident(value[:14] + "…" + value[-10:], value)
    return Ident(value)


def _epcs(event: dict[str, Any], places: Places) -> list[Ident]:
    out: list[Ident] = []
    for key in _EPC_KEYS:
        value = event.get(key)
        for epc in [value] if isinstance(value, str) else value or []:
            if isinstance(epc, str):
                out.append(ident(epc, places))
    for key in _QTY_KEYS:
        for q in event.get(key) or []:
            if isinstance(q, dict) and isinstance(q.get("epcClass"), str):
                shown = ident(q["epcClass"], places)
                amount = f" × {q.get('quantity', '?')} {q.get('uom', '')}".rstrip()
                out.append(Ident(shown.short + amount, shown.full))
    return out


def _event_row(event: dict[str, Any], places: Places, fallback_site: str | None) -> dict[str, Any]:
    where = (event.get("bizLocation") or event.get("readPoint") or {}).get("id")
    site = places.at_location(where)
    site_id = site.id if site is not None else fallback_site
    step = bare(event.get("bizStep"))
    zone = places.zone(site_id)
    return {
        "at": moment(event.get("eventTime")),
        "when": local(event.get("eventTime"), zone),
        "what": _STEPS.get(step, step.replace("_", " ").capitalize() or event.get("type", "")),
        "type": event.get("type"),
        "action": event.get("action"),
        "biz_step": step or "—",
        "disposition": bare(event.get("disposition")).replace("_", " ") or "—",
        "epcs": _epcs(event, places),
        "where": site.name if site is not None else None,
        "location": ident(where, None) if where else None,
        "event_id": event.get("eventID"),
    }


def backward(app: App, uow: UnitOfWork, result: dict[str, Any]) -> dict[str, Any]:
    """A pack's backward trace for the page: names, local times, a timeline and EPCIS rows."""
    places = Places.read(app, uow)
    made = result["site"]
    places.locate(made["id"], made.get("gln"))
    dispense = result.get("dispense")
    release = result.get("release")
    if dispense and dispense.get("site_id") not in (None, made["id"]):
        location = app.custody_chain.epcis.site_location(uow, dispense["site_id"])
        places.locate(dispense["site_id"], location.gln)
    people = users_by_id(
        uow.session,
        [
            i
            for i in (
                result["operator"]["id"],
                (release or {}).get("decided_by"),
                (dispense or {}).get("by"),
            )
            if i
        ],
    )

    def person(user_id: str | None) -> str | None:
        user = people.get(user_id or "")
        return user.full_name if user else user_id

    zone = places.zone(made["id"])
    batch, machine, lot = result["batch_record"], result["machine"], result["material_lots"][0]
    events = [_event_row(e, places, made["id"]) for e in result.get("events") or []]
    first = datetime.min.replace(tzinfo=zone)

    def life(e: dict[str, Any]) -> int:
        return _LIFE.index(e["biz_step"]) if e["biz_step"] in _LIFE else len(_LIFE)

    events.sort(key=lambda e: (e["at"] or first, life(e)))
    # (time, order within the same time, entry): the fixed steps of making come first
    steps: list[tuple[datetime | None, int, dict[str, Any]]] = []

    def add(
        at: Any, rank: int, what: str, who: str | None, site_id: str, *, where: bool = True
    ) -> None:
        steps.append(
            (
                moment(at),
                rank,
                {
                    "when": local(at, places.zone(site_id)),
                    "what": what,
                    "who": who,
                    "where": places.name(site_id) if where else None,
                },
            )
        )

    add(
        batch["started_at"],
        0,
        f"Batch {batch['batch_number']} started on {machine.get('name') or machine['id']} "
        f"(firmware {machine.get('firmware') or '—'}) with material lot {lot['lot_number']}",
        person(result["operator"]["id"]) or result["operator"].get("name"),
        made["id"],
    )
    if batch.get("finished_at"):
        add(batch["finished_at"], 1, f"Batch {batch['batch_number']} finished", None, made["id"])
    if release and release.get("decided_at"):
        decided = "released" if release["decision"] == "release" else release["decision"]
        add(
            release["decided_at"],
            2,
            f"QP decision: {str(decided).replace('_', ' ')} (signed)",
            person(release.get("decided_by")),
            made["id"],  # the making site's clock; the QP signs for the network
            where=False,
        )
    for i, e in enumerate(events):
        steps.append(
            (
                e["at"],
                3 + i,
                {"when": e["when"], "what": e["what"], "who": None, "where": e["where"]},
            )
        )
    if dispense:
        add(
            dispense["at"],
            100,
            f"Handed over for patient {result['patient_ref']}",
            person(dispense.get("by")),
            dispense.get("site_id") or made["id"],
        )
    timeline = [s for _, _, s in sorted(steps, key=lambda s: (s[0] or first, s[1]))]
    return {
        "zone": zone,
        "site_name": made.get("name") or made["id"],
        "operator": person(result["operator"]["id"]) or result["operator"].get("name"),
        "release_by": person((release or {}).get("decided_by")),
        "release_at": local((release or {}).get("decided_at"), zone),
        "dispense_by": person((dispense or {}).get("by")),
        "dispense_at": local(
            (dispense or {}).get("at"), places.zone((dispense or {}).get("site_id"))
        ),
        "dispense_site": places.name((dispense or {}).get("site_id")),
        "started_at": local(batch["started_at"], zone),
        "finished_at": local(batch.get("finished_at"), zone),
        "timeline": timeline,
        "events": events,
    }


def forward(app: App, uow: UnitOfWork, result: dict[str, Any]) -> dict[str, Any]:
    """A lot's forward trace for the page: each pack's making and dispensing site by name, the
    dispensing time in that site's zone."""
    places = Places.read(app, uow)
    rows = []
    for u in result["units"]:
        made = places.by_code.get(u["made_at_site"])
        given = u.get("dispensed_at_site")
        rows.append(
            {
                **u,
                "made_at": made.name if made else u["made_at_site"],
                "dispensed_where": places.name(given) if given else None,
                "dispensed_when": local(u.get("dispensed_at"), places.zone(given))
                if u.get("dispensed_at")
                else None,
            }
        )
    return {"units": rows}
