"""Training refusals: each one line from `factory train`, before any worker starts."""

from __future__ import annotations

import json
import time

import pytest

from factory.cli import main
from factory.config_loading import load_config
from factory.train.preflight import TrainingRefused, check_data, check_resources
from factory.train.train_config import TrainConfig


def config(*settings: str) -> TrainConfig:
    return load_config("jobs/configs/train_tiny_cpu.yaml", list(settings), model=TrainConfig)


def captions(tmp_path, images: int) -> str:
    path = tmp_path / "captions.jsonl"
    rows = [{"uri": f"/img/{n}.jpg", "caption": f"A red boat, number {n}."} for n in range(images)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def refusal(tmp_path, capsys, *settings: str) -> str:
    started = time.monotonic()
    args = ["train", "--config", "jobs/configs/train_tiny_cpu.yaml", "--set", f"output={tmp_path}"]
    for setting in settings:
        args += ["--set", setting]
    assert main(args) == 2
    assert time.monotonic() - started < 60  # refused up front, not after workers retried
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    # one line (what comes before it is the tiny model's build progress)
    return err.splitlines()[-1]


def test_a_missing_data_source_is_refused_in_one_line(tmp_path, capsys):
    err = refusal(tmp_path, capsys, f"data.source={tmp_path / 'nope.parquet'}")
    assert (
        err.startswith("factory train: data.source: no Parquet file at") and "nope.parquet" in err
    )


def test_one_image_is_too_few_for_a_validation_split(tmp_path, capsys):
    source = captions(tmp_path, 1)
    err = refusal(tmp_path, capsys, f"data.source={source}", "data.text_column=caption")
    assert "too few images for a validation split" in err
    assert "data.validation_fraction=0" in err
    # without validation asked for, one image is enough data
    split = check_data(
        config(f"data.source={source}", "data.text_column=caption", "data.validation_fraction=0")
    )
    assert len(split.train) == 1 and not split.validation


def test_resources_a_fixed_cluster_lacks_are_refused():
    two_cpus = {"CPU": 2.0, "memory": 1e9}
    wants_slot = config("data.source=x", "scaling.custom_resources_per_worker={train_slot: 1}")
    with pytest.raises(TrainingRefused, match="need 1 train_slot in all and this Ray has 0"):
        check_resources(wants_slot, two_cpus)
    with pytest.raises(TrainingRefused, match="need 1 GPU"):
        check_resources(config("data.source=x", "scaling.use_gpu=true"), two_cpus)
    with pytest.raises(TrainingRefused, match="3 worker.*need 3 CPU"):
        check_resources(config("data.source=x", "scaling.num_workers=3"), two_cpus)
    check_resources(config("data.source=x", "scaling.num_workers=2"), two_cpus)


def test_a_prompt_longer_than_max_length_is_refused(tmp_path, capsys):
    source = captions(tmp_path, 4)
    err = refusal(
        tmp_path,
        capsys,
        f"data.source={source}",
        "data.text_column=caption",
        "model.max_length=16",
        f"model.cache_dir={tmp_path / 'cache'}",
    )
    assert err.startswith("factory train: model.max_length: the prompt takes")
    assert "raise max_length or shorten the prompt" in err
