"""Custody use cases: packs (serialise, release, verify, dispense, undo, movements), EPCIS
events (record, capture, query), the signed ledger, trace and recall."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nearfab.common.node import NodeRole
from nearfab.custody.services.epcis import (
    CaptureResult,
    EpcisInvalid,
    EpcisStore,
    SchemaMissing,
    find_schema,
)
from nearfab.custody.services.keycerts import CertificateFiles
from nearfab.custody.services.ledger import CustodyLedger, KeyRing, LedgerReport
from nearfab.custody.services.revocation import (
    RevocationCheck,
    apply_crl,
    refresh_crl,
    revoke_certificate,
)
from nearfab.custody.services.sitekeys import (
    KeyImport,
    PublicSiteKey,
    export_certified_site_keys,
    export_site_keys,
    import_certified_site_keys,
    import_exported_site_keys,
    import_site_keys,
    parse_site_keys,
)
from nearfab.custody.services.trace import RecallService, TracedUnit, TraceService
from nearfab.custody.services.units import (
    UNDO_WINDOW,
    CustodyService,
    DispenseResult,
    Verification,
)
from nearfab.materials import MaterialService

LEDGER_KEY_FILE = "custody_ledger.key"


@dataclass
class CustodyChain:
    """The chain-of-custody services around one CustodyService (built in the composition
    root, or on demand by an entry point)."""

    custody: CustodyService
    epcis: EpcisStore
    ledger: CustodyLedger
    keyring: KeyRing
    trace: TraceService
    recalls: RecallService

    @classmethod
    def build(
        cls,
        custody: CustodyService,
        keys_dir: Path,
        materials: MaterialService | None = None,
        node: NodeRole | None = None,
    ) -> CustodyChain:
        """Ledger keys sealed with `<keys_dir>/custody_ledger.key` (made on first use);
        `materials` is the app's own service, which recalls mark lots through; `node`, the
        process's node role (a site node neither anchors for the control nor writes its chain)."""
        keyring = KeyRing.load_or_create(keys_dir / LEDGER_KEY_FILE)
        ledger = CustodyLedger(keyring, node)
        custody.use_ledger(ledger)
        trace = TraceService(custody.epcis, custody.quality)
        return cls(
            custody=custody,
            epcis=custody.epcis,
            ledger=ledger,
            keyring=keyring,
            trace=trace,
            recalls=RecallService(trace, custody.epcis, materials),
        )


__all__ = [
    "UNDO_WINDOW",
    "CaptureResult",
    "CertificateFiles",
    "CustodyChain",
    "CustodyLedger",
    "CustodyService",
    "DispenseResult",
    "EpcisInvalid",
    "EpcisStore",
    "KeyImport",
    "KeyRing",
    "LedgerReport",
    "PublicSiteKey",
    "RecallService",
    "RevocationCheck",
    "SchemaMissing",
    "TraceService",
    "TracedUnit",
    "Verification",
    "apply_crl",
    "export_certified_site_keys",
    "export_site_keys",
    "find_schema",
    "import_certified_site_keys",
    "import_exported_site_keys",
    "import_site_keys",
    "parse_site_keys",
    "refresh_crl",
    "revoke_certificate",
]
