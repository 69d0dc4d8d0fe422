"""Audit 29: what independent readers of the contracts found, and what earlier sessions left.

1. A legacy snapshot (inputs.md: ``gpu_utilization``, ``gpu_memory_mb``, ``gpu_temperature``, one GPU,
   index 0) whose GPU values were all refused still stored a GPU reading of index 0 with no value:
   a GPU seen where the file gave none.
"""

from __future__ import annotations

from conftest import Lab
from test_ingest_forms import gpu_rows, ledger_row, legacy


def test_a_legacy_snapshot_whose_gpu_values_are_all_refused_has_no_gpu(lab: Lab) -> None:
    lab.write_job("none", legacy(12, 1.0, 140.0, gpu_memory_mb=-5, gpu_temperature="hot"))
    lab.write_job("one", legacy(12, 1.0, 140.0, gpu_memory_mb=None) | {"job_id": "one"})
    lab.ingest()
    assert gpu_rows(lab, "old-gpt2") == {}
    assert ledger_row(lab, "none")["warnings"] == [
        "snapshot (step 12): gpu_utilization 140.0 is out of range, dropped; gpu_memory_mb -5 is out of range, "
        'dropped; gpu_temperature "hot" is not a number, dropped'
    ]
    # one value left is a GPU of index 0
    assert ledger_row(lab, "one")["warnings"] == [
        "snapshot (step 12): gpu_memory_mb is null, dropped",
        "snapshot (step 12): gpu_utilization 140.0 is out of range, dropped",
    ]
    assert gpu_rows(lab, "one") == {
        (12, 0): {
            "gpu_uuid": None,
            "utilization_percent": None,
            "memory_used_mb": None,
            "memory_total_mb": None,
            "temperature_c": 60.0,
            "power_w": None,
        }
    }
    assert lab.query("SELECT count(*) FROM step_gpus") == [(1,)]
