"""A batch's machine run travels to the control as a telemetry summary (issue 17: "telemetry
summaries"), once, after the first audited change of the batch record once the run ended.

The expected figures are computed here from the site's raw readings with Python's `statistics`
module (readings read with plain SQL, not through telemetry's read view)."""

from __future__ import annotations

import json
import statistics

from sqlalchemy import text
from tests import flow_helpers as fh
from tests.replication.test_replication_mqtt import _forged, nodes, repl

from nearfab.bootstrap import App
from nearfab.replication import verify_chain

__all__ = ["nodes"]


def raw_readings(app: App, run: str) -> dict[str, tuple[str, list[float]]]:
    """metric -> (unit, values) of a run's readings, straight from the tables."""
    out: dict[str, tuple[str, list[float]]] = {}
    with app.engine.connect() as c:
        rows = c.execute(
            text(
                "SELECT s.metric, s.unit, r.value FROM telemetry_series s "
                "JOIN telemetry_readings r ON r.series_id = s.id WHERE s.run = :run"
            ),
            {"run": run},
        )
        for metric, unit, value in rows:
            out.setdefault(metric, (unit, []))[1].append(float(value))
    return out


def test_a_finished_run_is_summarised_once_and_verifies_at_the_control(
    nodes: tuple[App, App],
) -> None:
    site, control = nodes
    batch_id = fh.make_batch(site)
    job_id = fh.batch(site, batch_id).job_id
    with site.uow() as uow:
        repl(site).capture_now(uow)
    with site.uow() as uow:
        records = repl(site).pending(uow, 100_000)
    summaries = [r for r in records if r.kind == "telemetry"]
    assert [r.source_ref for r in summaries] == [f"telemetry:{job_id}"]
    (summary,) = summaries
    body = json.loads(summary.payload)
    assert (body["batch_id"], body["run"], body["end_state"]) == (batch_id, job_id, "COMPLETE")

    raw = raw_readings(site, job_id)
    assert len(raw) >= 3 and all(len(v) >= 2 for _, v in raw.values())  # a real run's series
    assert set(body["metrics"]) == set(raw)
    for metric, (unit, values) in raw.items():
        got = body["metrics"][metric]
        assert (got["unit"], got["n"]) == (unit, len(values)), metric
        assert (got["min"], got["max"]) == (min(values), max(values)), metric
        assert abs(got["mean"] - statistics.fmean(values)) <= 1e-9 * max(1.0, abs(got["mean"]))
        assert abs(got["sd"] - statistics.stdev(values)) <= 1e-6 * max(1.0, got["sd"]), metric
    assert body["points"] == sum(len(v) for _, v in raw.values())

    # it follows the batch summary of the same audited change, carrying that row's hash
    by_seq = {r.seq: r for r in records}
    before = by_seq[summary.seq - 1]
    assert before.kind == "batch" and before.chain_hash == summary.chain_hash
    assert json.loads(before.payload)["audit_seq"] == body["audit_seq"]

    # a later change of the batch record sends its summary again, not the run's
    fh.complete_record(site, batch_id)
    fh.review_audit_trail(site, batch_id)
    with site.uow() as uow:
        repl(site).capture_now(uow)
    with site.uow() as uow:
        later = repl(site).pending(uow, 100_000)
    assert [r.source_ref for r in later if r.kind == "telemetry"] == [f"telemetry:{job_id}"]

    # the control holds it and the chain verifies; a summary claiming another hash is named
    with control.uow() as uow:
        applied = repl(control).apply(uow, [r.to_message() for r in later])
    assert applied.problems == []
    with control.uow() as uow:
        (status,) = repl(control).inbox_status(uow)
    assert status.ok, status.to_dict()
    upto = [r for r in later if r.seq < summary.seq]
    named = verify_chain([*upto, _forged(summary, chain_hash="e" * 64)])
    assert any(f"audit seq {body['audit_seq']}" in p for p in named), named
