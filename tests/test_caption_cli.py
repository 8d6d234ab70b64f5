"""`factory caption` end to end on a real local Ray: every input accounted for."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest

from factory.cli import main
from factory.io import uris
from factory.io.outputs import read_output
from tests import imagegen

NO_MODELS = ["--set", "caption=null", "--set", "ocr=null"]
FLAG_ONLY = ["--set", "health.reject_on=[]"]


def run_cli(capsys, source: str, output: str, *extra: str) -> tuple[dict, str]:
    assert main(["caption", "--input", source, "--output", output, *extra]) == 0
    printed = capsys.readouterr().out
    with open(os.path.join(output, "run.json")) as handle:
        return json.load(handle), printed


LABELS = {
    "captions": lambda row: "accepted",
    "rejected": lambda row: f"rejected:{row['reason']}",
    "duplicates": lambda row: f"duplicate:{row['kind']}",
}


def outcomes(output: str) -> dict[str, str]:
    """uri -> what the run decided, read back from the three output folders."""
    found: dict[str, str] = {}
    for folder, label in LABELS.items():
        table = read_output(output, folder)
        for row in table.to_pylist() if table is not None else []:
            assert row["uri"] not in found, f"{row['uri']} written twice"
            found[row["uri"]] = label(row)
    return found


def expected_by_uri(root, expected: dict[str, str]) -> dict[str, str]:
    return {uris.local_path_to_uri(os.path.join(str(root), k)): v for k, v in expected.items()}


def test_mixed_folder_every_input_accounted_for_and_captioned(tmp_path, capsys, ray_local):
    expected = imagegen.write_mixed_folder(tmp_path / "in")
    output = str(tmp_path / "out")
    # random-weight captions loop; health's own tests are in tests/stages
    run, printed = run_cli(capsys, str(tmp_path / "in"), output, *FLAG_ONLY)

    assert outcomes(output) == expected_by_uri(tmp_path / "in", expected)
    counts = run["counts"]
    assert counts["inputs"] == len(expected)
    assert counts["inputs"] == counts["accepted"] + counts["rejected"] + counts["duplicates"]
    assert counts["accepted"] == sum(v == "accepted" for v in expected.values())
    assert counts["skipped_existing"] == 0
    stages = {"read", "validate", "fingerprint", "dedup", "caption", "health"}
    assert set(run["stage_seconds"]) >= stages
    loop = {"qa", "expand", "decompose", "critic", "rewrite"}
    assert set(run["skipped_stages"]) == {"clip", "detect"} | loop
    assert "skipped clip: no weights configured" in printed
    assert run["config"]["input"] == str(tmp_path / "in")
    assert "ray" in run["versions"]

    captions = read_output(output, "captions")
    assert all(text.strip() for text in captions.column("caption_detailed").to_pylist())
    assert all(isinstance(f, list) for f in captions.column("health_flags").to_pylist())
    lineage = captions.column("caption_detailed_lineage")[0].as_py()
    assert lineage["model"] == "builtin://tiny-llava" and len(lineage["prompt_sha256"]) == 64
    assert set(captions.column("run_id").to_pylist()) == {run["run_id"]}
    assert max(captions.column("width").to_pylist() + captions.column("height").to_pylist()) <= 1024
    duplicates = read_output(output, "duplicates").to_pylist()
    harbour = uris.local_path_to_uri(str(tmp_path / "in" / "harbour.jpg"))
    assert {row["duplicate_of"] for row in duplicates} == {harbour}
    assert "random-weight demo model" in printed
    assert f"inputs {len(expected)}:" in printed

    rerun, printed = run_cli(capsys, str(tmp_path / "in"), output, *FLAG_ONLY)
    # the output's record stays whole; this run's own share is kept apart
    assert rerun["this_run"]["counts"]["skipped_existing"] == len(expected)
    assert rerun["this_run"]["counts"]["accepted"] == 0
    assert rerun["counts"]["accepted"] == run["counts"]["accepted"]
    assert outcomes(output) == expected_by_uri(tmp_path / "in", expected)


def test_few_large_input_blocks_account_for_every_input(tmp_path, capsys, ray_local):
    expected = imagegen.write_mixed_folder(tmp_path / "in")
    output = str(tmp_path / "out")
    cap = ["--set", "ray.rows_per_block=1", "--set", "ray.max_input_blocks=2"]
    run, _ = run_cli(capsys, str(tmp_path / "in"), output, *NO_MODELS, *FLAG_ONLY, *cap)

    assert run["input_blocks"] == 2 < len(expected)
    assert outcomes(output) == expected_by_uri(tmp_path / "in", expected)
    assert not (tmp_path / "out" / "_listing").exists()  # the spilled listing is gone


def test_manifest_carries_catalogue_and_rejects_at_read(tmp_path, capsys, ray_local):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "wave.jpg").write_bytes(imagegen.jpeg(300, 200, seed=11))
    (tmp_path / "img" / "big.jpg").write_bytes(imagegen.jpeg(900, 700, seed=12))
    manifest = tmp_path / "objects.csv"
    manifest.write_text(
        "uri,object_id,title,creator,museum\n"
        "img/wave.jpg,00042,The Great Wave,Hokusai,Met\n"
        "img/big.jpg,00043,Large,,\n"
        "img/missing.jpg,00044,Lost,,\n"
        ",00045,No file,,\n"
    )
    output = str(tmp_path / "out")
    small = ["--set", "validation.max_bytes=12000"]
    run, _ = run_cli(capsys, str(manifest), output, *NO_MODELS, *small)

    captions = read_output(output, "captions").to_pylist()
    assert [(r["object_id"], r["title"], r["creator"]) for r in captions] == [
        ("00042", "The Great Wave", "Hokusai")
    ]
    rejected = {r["uri"].rsplit("/", 1)[-1]: r for r in read_output(output, "rejected").to_pylist()}
    assert rejected["big.jpg"]["reason"] == "file_too_large"
    assert rejected["big.jpg"]["stage"] == "read"
    assert rejected["missing.jpg"]["reason"] == "unreadable"
    assert rejected[""]["reason"] == "missing_uri"
    assert run["counts"] == {
        "inputs": 4,
        "accepted": 1,
        "rejected": 3,
        "duplicates": 0,
        "skipped_existing": 0,
    }


def test_s3_input_and_output_over_http(tmp_path, capsys, ray_local, s3_bucket):
    import boto3
    import pyarrow.fs as pafs

    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    for seed in range(3):
        s3.put_object(Bucket=s3_bucket, Key=f"in/a{seed}.jpg", Body=imagegen.jpeg(200, 150, seed))
    s3.put_object(Bucket=s3_bucket, Key="in/sub/copy.jpg", Body=imagegen.jpeg(200, 150, 0))
    s3.put_object(Bucket=s3_bucket, Key="in/broken.jpg", Body=b"<html>503</html>")
    manifest = b'{"uri": "in/a1.jpg", "title": "T"}'
    s3.put_object(Bucket=s3_bucket, Key="manifest.jsonl", Body=manifest)
    output = f"s3://{s3_bucket}/runs/one"
    source = f"s3://{s3_bucket}/in"
    assert main(["caption", "--input", source, "--output", output, *NO_MODELS]) == 0

    filesystem, path = uris.filesystem(output)
    run = json.loads(uris.read_bytes(f"{output}/run.json"))
    assert run["counts"] == {
        "inputs": 5,
        "accepted": 3,
        "rejected": 1,
        "duplicates": 1,
        "skipped_existing": 0,
    }
    found = outcomes(output)
    assert found[f"s3://{s3_bucket}/in/sub/copy.jpg"] == "duplicate:exact"
    assert found[f"s3://{s3_bucket}/in/broken.jpg"] == "rejected:not_an_image"
    shards = filesystem.get_file_info(pafs.FileSelector(f"{path}/captions"))
    assert pq.read_table(shards[0].path, filesystem=filesystem).num_rows == 3
    written = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    assert not [entry.path for entry in written if "/_listing/" in entry.path]

    from_manifest = f"s3://{s3_bucket}/runs/two"
    main(["caption", "--input", f"s3://{s3_bucket}/manifest.jsonl", "--output", from_manifest,
          *NO_MODELS])  # fmt: skip
    row = read_output(from_manifest, "captions").to_pylist()[0]
    assert (row["uri"], row["title"]) == (f"s3://{s3_bucket}/in/a1.jpg", "T")
    capsys.readouterr()


def test_bad_input_uri_is_a_clear_error(tmp_path, capsys):
    assert main(["caption", "--input", str(tmp_path / "nope"), "--output", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("caption.resources.num_gpus=1", "the plan needs at least 1 GPU "),
        ("caption.resources.num_cpus=2", "the stages need"),
        ("caption.resources.custom_resources={vlm_slot: 1}", "asks for 1 'vlm_slot'"),
    ],
)
def test_plans_that_cannot_fit_the_cluster_are_refused_not_hung(
    tmp_path, capsys, ray_local, bad, why
):
    (tmp_path / "a.jpg").write_bytes(imagegen.jpeg(100, 100, seed=1))
    output = str(tmp_path / "o")
    code = main(["caption", "--input", str(tmp_path), "--output", output, "--set", bad])
    assert code == 2
    assert why in capsys.readouterr().err


def test_first_in_listing_order_is_kept_even_when_a_copy_is_ready_first(
    tmp_path, capsys, ray_local
):
    from PIL import Image

    source = tmp_path / "in"
    source.mkdir()
    original = imagegen.make_image(4000, 3000, seed=21)
    (source / "a_original.png").write_bytes(imagegen.encode(original, "PNG"))
    small = original.resize((400, 300), Image.Resampling.LANCZOS)
    (source / "b_small_copy.jpg").write_bytes(imagegen.encode(small, "JPEG", quality=70))
    for seed in range(6):
        (source / f"c{seed}.jpg").write_bytes(imagegen.jpeg(200, 150, seed=40 + seed))
    output = str(tmp_path / "out")
    run, _ = run_cli(
        capsys,
        str(source),
        output,
        *NO_MODELS,
        "--set",
        "ray.rows_per_block=1",
        "--set",
        "validation.resources.batch_size=1",
    )
    assert run["counts"]["duplicates"] == 1
    duplicates = read_output(output, "duplicates").to_pylist()
    assert (duplicates[0]["uri"], duplicates[0]["duplicate_of"], duplicates[0]["kind"]) == (
        str(source / "b_small_copy.jpg"),
        str(source / "a_original.png"),
        "near",
    )


def test_clip_and_detect_experts_run_in_the_pipeline(tmp_path, capsys, ray_local):
    import pyarrow as pa

    source = tmp_path / "in"
    source.mkdir()
    for seed in range(4):
        (source / f"p{seed}.jpg").write_bytes(imagegen.jpeg(240, 180, seed=60 + seed))
    experts = [
        "clip.model=builtin://tiny-clip", "clip.tag_threshold=0", "clip.tag_top_k=3",
        "clip.resources.num_cpus=0.5", "detect.model=builtin://tiny-owlvit",
        "detect.score_threshold=0", "detect.max_boxes=2", "detect.resources.num_cpus=0.5",
        f"clip.cache_dir={tmp_path / 'models'}", f"detect.cache_dir={tmp_path / 'models'}",
    ]  # fmt: skip
    flags = [part for item in experts for part in ("--set", item)]
    output = str(tmp_path / "out")
    run, printed = run_cli(capsys, str(source), output, *NO_MODELS, *flags)

    assert run["counts"]["accepted"] == 4 and "clip" not in run["skipped_stages"]
    captions = read_output(output, "captions")
    schema = captions.schema
    assert schema.field("category").type == pa.string()
    assert schema.field("embedding").type == pa.list_(pa.float32())
    assert pa.types.is_list(schema.field("objects").type)
    for row in captions.to_pylist():
        assert row["category"] and len(row["tags"]) == 3
        assert abs(sum(v * v for v in row["embedding"]) - 1) < 1e-4
        assert 0 < len(row["objects"]) <= 2
        assert all(0 <= v <= 1 for obj in row["objects"] for v in obj["box"])
        assert {obj["label"] for obj in row["objects"]} <= {tag["label"] for tag in row["tags"]}
    assert "clip by builtin://tiny-clip, a random-weight demo model" in printed


def test_a_plan_that_cannot_work_is_refused_before_listing_or_ray(tmp_path, capsys):
    # the input does not exist either: the plan error must come first, with no Ray started
    missing = str(tmp_path / "nope")
    code = main(["caption", "--input", missing, "--output", str(tmp_path / "o"),
                 "--set", "detect.model=/m/owl"])  # fmt: skip
    assert code == 2
    assert "detect has nothing to look for" in capsys.readouterr().err
