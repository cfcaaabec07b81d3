"""The study pipeline as a Prefect flow, on a tiny generated study (a temporary Prefect server)."""

import json
from datetime import date
from uuid import UUID

import duckdb
import pytest

from vigil.report.render import current_report
from vigil.warehouse.snapshots import current_snapshot

pytestmark = pytest.mark.flow


def test_study_pipeline_runs_a_tiny_study_end_to_end_and_the_watch_skips_when_nothing_is_new(
        prefect_harness, tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
    from prefect.events import emit_event

    from pipelines import study_flow
    from pipelines.study_flow import study_pipeline
    from vigil.synth import synthesize_study

    emitted = []  # the events the flow emits, passed on to Prefect as they are
    monkeypatch.setattr(study_flow, "emit_event", lambda **event: emitted.append(event) or emit_event(**event))

    synth = synthesize_study(tmp_path / "landing", patients=400, sites=2, seed=7, faults=True)
    db = tmp_path / "wh" / "vigil.duckdb"
    result = study_pipeline([tmp_path / "landing"], db, today=date(2026, 11, 25))

    statuses = sorted(o.status for o in result["deliveries"])
    assert statuses == ["accepted"] * len(synth.deliveries) + ["refused"] * len(synth.refused)
    run = result["run"]
    assert run.run_id == 1 and current_snapshot(db).resolve() == run.snapshot.resolve()
    assert current_report(db.parent / "report").resolve() == result["report"].out_dir.resolve()

    con = duckdb.connect(str(db), read_only=True)
    flow_run_id, steps, deliveries = con.execute(
        "SELECT flow_run_id, step_seconds, deliveries FROM results.runs WHERE run_id = 1").fetchone()
    con.close()
    assert set(json.loads(steps)) == {"ingest", "cohort", "analyses", "monitoring", "variants"}
    # The generated study's rate is 2-3 times the SAP 7 reference rates: its first look signals. The flow
    # run completed, and it said so with the event an automation matches and with the look table.
    assert result["monitoring"]["signal"] and run.analyses["monitoring"]["look"] == 1
    assert [e["event"] for e in emitted] == ["vigil.monitoring.signal"]
    assert emitted[0]["payload"]["run_id"] == 1 and emitted[0]["payload"]["new_signal"] is True
    assert {d["site_id"] for d in json.loads(deliveries)} == {"DK01", "SE02"}
    with get_client(sync_client=True) as client:  # the run points at the flow run that made it
        flow_run = client.read_flow_run(UUID(flow_run_id))
        assert client.read_flow(flow_run.flow_id).name == "study-pipeline"
        assert flow_run.state.is_completed()
        # this flow run's (the session's server also holds those of other tests' study pipelines)
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["safety-monitoring"]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])))
        assert "SIGNAL" in artifact.description
        assert [row["look"] for row in json.loads(artifact.data)] == [1]

    watch = study_pipeline([tmp_path / "landing"], db, only_if_new=True, today=date(2026, 11, 25))
    assert {o.status for o in watch["deliveries"]} == {"already_loaded", "refused"}
    assert watch["run"] is None
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT max(run_id) FROM results.runs").fetchone() == (1,)
    con.close()
