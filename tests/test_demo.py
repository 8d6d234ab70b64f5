"""`factory demo`: the shipped samples, captioned offline by a model built on first run."""

import json
import os

from factory.cli import main, samples_dir
from factory.io.outputs import read_output


def test_demo_builds_the_tiny_model_and_captions_every_sample(tmp_path, capsys, ray_local):
    cache = tmp_path / "models"
    code = main(
        ["demo", "--output", str(tmp_path / "demo"), "--set", f"caption.engine.cache_dir={cache}"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert (cache / "builtin").is_dir()
    run = json.loads((tmp_path / "demo" / "run.json").read_text())
    samples = [p for p in os.listdir(samples_dir()) if not p.endswith(".tsv")]
    assert run["counts"]["accepted"] == len(samples) == 6
    captions = read_output(str(tmp_path / "demo"), "captions")
    assert all(captions.column("caption_detailed").to_pylist())
    # the random captioner loops, and health says so on the row instead of rejecting it
    flags = captions.column("health_flags").to_pylist()
    assert any(f["rule"] == "repetition" for row in flags for f in row)
    assert "random-weight demo model" in printed
