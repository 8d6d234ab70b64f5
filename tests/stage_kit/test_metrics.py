"""Stage metrics reach Prometheus through Ray, and agree with the run's own summary."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from factory.cli import main, samples_dir


def scrape(ray) -> tuple[Counter, Counter, Counter]:
    """Rows by (stage, outcome), batches by stage and tokens by prompt, summed over workers."""
    rows, batches, tokens = Counter(), Counter(), Counter()
    for node in ray.nodes():
        url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if sample.name == "ray_factory_stage_rows_total":
                    rows[(labels["stage"], labels["outcome"])] += sample.value
                elif sample.name == "ray_factory_stage_batch_seconds_count":
                    batches[labels["stage"]] += sample.value
                elif sample.name == "ray_factory_tokens_generated_total":
                    tokens[labels["prompt"]] += sample.value
    return rows, batches, tokens


def settled(ray) -> tuple[Counter, Counter, Counter]:
    """A scrape once earlier runs' workers have flushed: every worker pushes its counters
    once per report interval, so nothing may change over a whole interval and a margin.
    (An earlier test's run, still unflushed, would otherwise count as this one's.)"""
    quiet = ray._config.metrics_report_interval_ms() / 1000 + 2
    deadline = time.monotonic() + 6 * quiet
    last = scrape(ray)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = scrape(ray)
        if now == last:
            return now
        last = now
    raise AssertionError("the metrics kept changing with no run in progress")


def test_stage_counters_latencies_and_tokens_are_exported(tmp_path, ray_local):
    inputs = tmp_path / "in"
    shutil.copytree(samples_dir(), inputs)
    (inputs / "broken.jpg").write_bytes(b"not an image at all")
    before = settled(ray_local)
    out = tmp_path / "out"
    args = ["caption", "--input", str(inputs), "--output", str(out)]
    assert main([*args, "--set", "health.reject_on=[]"]) == 0
    run = json.loads((out / "run.json").read_text())
    counts = run["counts"]

    def delta() -> tuple[Counter, Counter, Counter]:
        after = scrape(ray_local)
        return tuple(a - b for a, b in zip(after, before, strict=True))

    # every worker process exports on its own clock, every few seconds: wait for the last
    # one of each kind (tasks: validate; actors: caption) to land
    deadline = time.monotonic() + 60
    rows, batches, tokens = delta()
    while time.monotonic() < deadline and (
        rows[("validate", "in")] < counts["inputs"] or rows[("caption", "ok")] < counts["accepted"]
    ):
        time.sleep(2)
        rows, batches, tokens = delta()
    assert rows[("validate", "in")] == counts["inputs"] == 7
    assert rows[("validate", "rejected")] == counts["rejected"] == 1
    assert rows[("caption", "ok")] == counts["accepted"] == 6
    assert batches["validate"] >= 1 and batches["caption"] >= 1
    assert tokens["caption_fusion.v1"] > 0  # the transformers engine counted what it wrote
