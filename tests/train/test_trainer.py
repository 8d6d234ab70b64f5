"""`factory train` end to end: Ray Train fits the tiny preset on a caption run's output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factory.cli import main, samples_dir

CAPTIONS = [
    "A harvest field with workers cutting golden wheat under a pale sky.",
    "A great wave curls over three small boats with a mountain behind.",
    "Two fish and a prawn lie beside a short poem written in ink.",
    "A page of an old book shows constellations drawn as figures.",
    "Worn grey coins show a profile and letters around the rim.",
    "A quiet gallery room with a red vase on a wooden table.",
]


@pytest.fixture
def caption_run(tmp_path) -> str:
    """A caption run's output folder with real sample images and their captions."""
    images = sorted(n for n in os.listdir(samples_dir()) if not n.endswith(".tsv"))
    rows = {
        "uri": [os.path.join(samples_dir(), name) for name in images],
        "caption_detailed": CAPTIONS[: len(images)],
        "draft_style": ["detailed"] * len(images),
    }
    folder = tmp_path / "run" / "captions"
    folder.mkdir(parents=True)
    pq.write_table(pa.table(rows), folder / "part-0.parquet")
    return str(tmp_path / "run")


def run_tiny_preset(*settings: str) -> None:
    """`factory train` on the tiny preset with `--set` for each setting (later ones win)."""
    args = ["train", "--config", "jobs/configs/train_tiny_cpu.yaml"]
    for value in settings:
        args += ["--set", value]
    assert main(args) == 0


def train(tmp_path, *overrides: str) -> dict:
    """The tiny preset with output, checkpoints and cache under tmp_path; its metrics."""
    out = tmp_path / "model"
    run_tiny_preset(
        f"output={out}",
        f"storage={tmp_path / 'checkpoints'}",
        f"model.cache_dir={tmp_path / 'cache'}",
        *overrides,
    )
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_tiny_preset_trains_lora_and_publishes_the_adapter(tmp_path, caption_run, ray_local):
    out = tmp_path / "model"
    metrics = train(tmp_path, f"data.source={caption_run}")
    epochs = metrics["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert metrics["best_val_loss"] == min(e["val_loss"] for e in epochs)
    # generated validation captions scored against the held-out references
    assert all(0 <= e["val_BLEU-4"] <= 1 and e["val_CIDEr-D"] >= 0 for e in epochs)
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"]
    assert metrics["samples_per_s"] > 0 and metrics["peak_rss_mb"] > 0
    assert "gpu_energy_wh" not in metrics  # no GPU, no NVML counter: left out, not zero
    assert (out / "model" / "adapter_config.json").exists()
    assert (out / "model" / "adapter_model.safetensors").exists()
    assert "lora" in (out / "config.yaml").read_text()


@pytest.mark.slow
def test_data_checkpoints_and_model_on_s3(tmp_path, s3_bucket, ray_local):
    import boto3

    s3 = boto3.client("s3")
    images = sorted(n for n in os.listdir(samples_dir()) if not n.endswith(".tsv"))
    for name in images:
        s3.upload_file(os.path.join(samples_dir(), name), s3_bucket, f"images/{name}")
    table = pa.table(
        {
            "uri": [f"s3://{s3_bucket}/images/{name}" for name in images],
            "caption_detailed": CAPTIONS[: len(images)],
        }
    )
    local = tmp_path / "part-0.parquet"
    pq.write_table(table, local)
    s3.upload_file(str(local), s3_bucket, "run/captions/part-0.parquet")
    root = f"s3://{s3_bucket}"
    run_tiny_preset(
        f"data.source={root}/run",
        f"output={root}/models/tiny",
        f"storage={root}/checkpoints",
        f"model.cache_dir={tmp_path / 'cache'}",
        "optim.epochs=1",
    )
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    for published in ("config.yaml", "metrics.json", "model/adapter_model.safetensors"):
        assert f"models/tiny/{published}" in keys
    assert any(k.startswith("checkpoints/tiny-cpu/") and k.endswith(".pt") for k in keys)


@pytest.mark.slow
def test_a_worker_killed_after_a_checkpoint_resumes_from_it(tmp_path, caption_run, ray_local):
    drill = "epoch_end_hooks=['tests.train_drills:crash_once_after_first_epoch']"
    metrics = train(tmp_path, f"data.source={caption_run}", drill, "optim.epochs=2")
    marker = tmp_path / "checkpoints" / "tiny-cpu" / "drill-crashed"
    assert marker.read_text() == "crashed after epoch 1\n"  # the worker did die
    # resumed at epoch 2 from the epoch-1 checkpoint: no epoch ran twice, none was lost
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]


QUESTIONS = [
    ("What is in the foreground?", "Workers cutting wheat."),
    ("What is the main colour?", "Deep blue."),
    ("Is there any writing?", "Yes, a short poem."),
    ("What is drawn on the page?", "Constellations."),
    ("What metal are the coins?", "Cannot tell from the image."),
    ("What stands on the table?", "A red vase."),
]


@pytest.fixture
def qa_run(tmp_path) -> str:
    """A caption run's output with a `qa` column, as the qa stage writes it."""
    images = sorted(n for n in os.listdir(samples_dir()) if not n.endswith(".tsv"))
    qa = [[{"category": "subject", "question": q, "answer": a}] for q, a in QUESTIONS]
    rows = {"uri": [os.path.join(samples_dir(), n) for n in images], "qa": qa[: len(images)]}
    folder = tmp_path / "qa-run" / "captions"
    folder.mkdir(parents=True)
    pq.write_table(pa.table(rows), folder / "part-0.parquet")
    return str(tmp_path / "qa-run")


@pytest.mark.slow
def test_blip_learns_museum_qa_and_the_saved_model_answers(tmp_path, qa_run, ray_local):
    import torch
    from PIL import Image
    from transformers import AutoProcessor, BlipForQuestionAnswering

    metrics = train(
        tmp_path,
        "data.kind=qa",
        f"data.source={qa_run}",
        "model.model=builtin://tiny-blip",
        "model.family=blip",
        "model.task=qa",
        "model.max_length=32",
        "method.method=full",
        "optim.epochs=3",
        "optim.lr=0.001",
    )
    epochs = metrics["epochs"]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert metrics["trainable_parameters"] < metrics["total_parameters"]  # vision frozen
    model_dir = tmp_path / "model" / "model"
    model = BlipForQuestionAnswering.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    image = Image.open(os.path.join(samples_dir(), "hokusai_great_wave.png")).convert("RGB")
    inputs = processor(images=image, text=QUESTIONS[1][0], return_tensors="pt")
    with torch.no_grad():
        answer = model.generate(**inputs, max_new_tokens=8)
    assert answer.shape[-1] > 1  # it decodes past the start token


@pytest.mark.slow
def test_a_rerun_with_the_same_name_and_storage_continues_the_run(tmp_path, caption_run, ray_local):
    first = train(tmp_path, f"data.source={caption_run}", "optim.epochs=1")
    assert [e["epoch"] for e in first["epochs"]] == [1]
    # the whole job restarted (a new `factory train` on the same storage), asking for more
    again = train(tmp_path, f"data.source={caption_run}", "optim.epochs=2")
    assert [e["epoch"] for e in again["epochs"]] == [1, 2]
    assert again["epochs"][0] == first["epochs"][0]  # epoch 1 came from the checkpoint


@pytest.mark.slow
def test_a_worker_error_reaches_the_user_in_one_line_and_is_not_retried(
    tmp_path, caption_run, ray_local, capsys
):
    out = tmp_path / "model"
    args = ["train", "--config", "jobs/configs/train_tiny_cpu.yaml", "--set", f"output={out}"]
    for setting in (f"data.source={caption_run}", "method.target_modules=[no_such_proj]"):
        args += ["--set", setting]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    # the worker's own exception, not Ray's wrapper; one attempt: nothing was saved to
    # resume from, so a retry would only repeat it
    assert err.startswith("factory train: worker rank 0 failed: ValueError: ")
    assert "['no_such_proj']" in err and "attempt" not in err
    assert not list(out.glob("checkpoints/tiny-cpu/checkpoint_*"))


@pytest.mark.slow
def test_ctrl_c_stops_a_run_given_relative_paths_and_keeps_its_checkpoints(tmp_path, caption_run):
    """A user's `factory train` in a terminal: relative paths, then Ctrl-C after an epoch.

    Ray Train workers run in a folder of their own, so relative paths must reach them
    made absolute; Ctrl-C then ends the run in one line with the interrupt's exit status.
    """
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    config = os.path.join(repo, "jobs", "configs", "train_tiny_cpu.yaml")
    process = subprocess.Popen(
        [sys.executable, "-m", "factory.cli", "train", "--config", config]
        + ["--set", "output=model", "--set", "data.source=run", "--set", "optim.epochs=500"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(600, process.kill)  # a hang fails the test, not CI
    watchdog.start()
    try:
        seen = []
        for line in process.stdout:
            seen.append(line)
            if "epoch 1 done" in line:
                process.send_signal(signal.SIGINT)
                break
        assert "epoch 1 done" in seen[-1], "".join(seen[-20:])
        rest = process.stdout.read()
        assert process.wait() == 130, rest
    finally:
        watchdog.cancel()
    last = rest.strip().splitlines()[-1]
    checkpoints = tmp_path / "model" / "checkpoints" / "tiny-cpu"
    assert last == (
        f"factory train: interrupted; checkpoints so far are in {checkpoints}, "
        "and the same command continues from the latest"
    )
    assert any(name.startswith("checkpoint_") for name in os.listdir(checkpoints))


@pytest.fixture
def review_pairs(tmp_path) -> str:
    """Preference pairs as `factory review import` writes them."""
    images = sorted(n for n in os.listdir(samples_dir()) if not n.endswith(".tsv"))
    uris = [os.path.join(samples_dir(), name) for name in images]
    table = pa.table(
        {
            "uri": uris,
            "prompt": ["Describe this artwork."] * len(uris),
            "prompt_template": ["caption_detailed.v1"] * len(uris),
            "style": ["detailed"] * len(uris),
            "chosen": CAPTIONS[: len(uris)],
            "rejected": ["A picture of something with things in it."] * len(uris),
            "critic_score": [0.25] * len(uris),
            "run_id": ["r"] * len(uris),
            "review_id": [f"id{i}" for i in range(len(uris))],
        }
    )
    path = tmp_path / "pairs.parquet"
    pq.write_table(table, path)
    return str(path)


@pytest.mark.slow
def test_dpo_sft_bco_on_review_pairs_logs_rewards(tmp_path, review_pairs, ray_local):
    metrics = train(
        tmp_path,
        "data.kind=preference",
        f"data.source={review_pairs}",
        "optim.epochs=2",
        "optim.lr=0.005",
    )
    last = metrics["epochs"][-1]
    for name in ("reward_chosen", "reward_rejected", "reward_margin", "bco_delta", "loss_dpo"):
        assert name in last
    # the policy moves towards the corrected captions and away from the drafts
    assert last["reward_margin"] > 0
    assert metrics["epochs"][-1]["train_loss"] < metrics["epochs"][0]["train_loss"]
