"""Import every domain's models so Base.metadata knows all tables (Alembic, tests)."""

from __future__ import annotations


def load_all() -> None:
    import nearfab.comparability.models
    import nearfab.custody.models
    import nearfab.identity.models
    import nearfab.masterfiles.models
    import nearfab.materials.models
    import nearfab.monitoring.models
    import nearfab.network.models
    import nearfab.orders.dose_models
    import nearfab.orders.models
    import nearfab.production.models
    import nearfab.quality.models
    import nearfab.quality.qms_models
    import nearfab.replication.models
    import nearfab.scheduling.models
    import nearfab.telemetry.models
    import nearfab.vigilance.models  # noqa: F401
