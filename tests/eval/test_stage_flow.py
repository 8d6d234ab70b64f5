"""Records through each stage of a run, from run.json's counts and rejected reasons."""

from __future__ import annotations

from factory.eval.run_report import stage_flow


def test_stage_flow_by_hand():
    summary = {
        "counts": {"inputs": 10, "skipped_existing": 1, "duplicates": 2, "accepted": 4},
        "rejected_reasons": {"validate/corrupt": 1, "critic/no_verdicts": 2},
        "stage_seconds": {"health": 0.1, "critic": 2.0, "read": 0.5, "dedup": 0.0, "caption": 3.0},
    }
    assert stage_flow(summary) == [
        ("read", 9, 0, 0, 9, 0.5),
        ("validate", 9, 1, 0, 8, None),  # only rejected there: no timing recorded
        ("dedup", 8, 0, 2, 6, 0.0),
        ("caption", 6, 0, 0, 6, 3.0),
        ("critic", 6, 2, 0, 4, 2.0),
        ("health", 4, 0, 0, 4, 0.1),
    ]
