"""`export_review`: the right captions, their images, a file a person can edit, no lost edits."""

from __future__ import annotations

import csv
import io
import json
import os

import pyarrow as pa
import pytest
from PIL import Image

from factory.io import uris
from factory.review.export import export_review
from factory.review.items import read_review
from factory.review.review_errors import FolderNotEmpty, NothingToReview
from tests.review import fakerun


def jsonl_items(folder: str) -> list[dict]:
    text = uris.read_bytes(uris.join(folder, "review.jsonl")).decode("utf-8")
    return [json.loads(line) for line in text.splitlines()]


def pixel(data: bytes) -> tuple[int, int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB").getpixel((0, 0))


def test_exports_exactly_the_n_lowest_ties_by_uri(run, tmp_path):
    summary = export_review(run.output, str(tmp_path / "review"), n=4)

    items = jsonl_items(str(tmp_path / "review"))
    assert [item["uri"] for item in items] == run.lowest(4)
    # scores 0.0, 0.125, 0.25, then one of the three 0.5s: the smallest uri wins the tie
    tied = sorted(uri for uri, score in run.score_of.items() if score == 0.5)
    assert items[3]["uri"] == tied[0]
    assert [item["critic_score"] for item in items] == [0.0, 0.125, 0.25, 0.5]
    assert (summary.items, summary.eligible, summary.captions) == (4, 7, 8)
    assert (summary.lowest, summary.highest) == (0.0, 0.5)


def test_ties_across_the_cut_are_stable_between_exports(run, tmp_path):
    first = export_review(run.output, str(tmp_path / "a"), n=5)
    second = export_review(run.output, str(tmp_path / "b"), n=5)
    assert uris.read_bytes(first.review_file) == uris.read_bytes(second.review_file)
    assert [item["uri"] for item in jsonl_items(str(tmp_path / "a"))] == run.lowest(5)


def test_unscored_rows_are_never_exported(run, tmp_path):
    export_review(run.output, str(tmp_path / "review"), n=100)
    exported = {item["uri"] for item in jsonl_items(str(tmp_path / "review"))}
    assert exported == {uri for uri, score in run.score_of.items() if score is not None}
    assert run.uri_of["unscored.png"] not in exported


def test_images_are_copied_readable_and_uniquely_named(run, tmp_path):
    folder = str(tmp_path / "review")
    export_review(run.output, folder, n=7)

    items = jsonl_items(folder)
    names = [item["image"] for item in items]
    assert len(set(names)) == 7
    for rank, item in enumerate(items, start=1):
        path = os.path.join(folder, item["image"])
        assert item["image"].startswith("images/") and os.path.isfile(path)
        assert os.path.basename(path).startswith(f"{rank:03d}-")
        with open(path, "rb") as handle:
            assert pixel(handle.read()) == run.colour_of[item["uri"]]
    by_uri = {item["uri"]: item["image"] for item in items}
    # readable names: an ASCII slug of the source name; a key without extension is sniffed
    assert "-grande-vague-a-kanagawa-" in by_uri[run.uri_of["Grande Vague à Kanagawa.png"]]
    assert by_uri[run.uri_of["aratea-no-extension"]].endswith(".png")
    assert sorted(os.listdir(os.path.join(folder, "images"))) == sorted(
        os.path.basename(name) for name in names
    )


def test_items_carry_facts_verdicts_and_an_empty_correction(run, tmp_path):
    folder = str(tmp_path / "review")
    export_review(run.output, folder, n=7)
    items = {item["uri"]: item for item in jsonl_items(folder)}

    flagged = items[run.uri_of["Grande Vague à Kanagawa.png"]]  # first shard: has flags
    assert flagged["draft_caption"] == fakerun.draft("Grande Vague à Kanagawa.png")
    assert flagged["final_caption"].endswith("on the right.")
    assert flagged["corrected_caption"] == ""
    assert [check["verdict"] for check in flagged["fact_checks"]] == ["consistent", "inconsistent"]
    assert flagged["fact_checks"][1]["correction"] == "The boat is on the right."
    assert flagged["health_flags"] == [
        {"field": "draft_caption", "rule": "too_long", "detail": "312 chars"}
    ]
    assert (flagged["style"], flagged["prompt_template"], flagged["run_id"]) == (
        "detailed",
        fakerun.TEMPLATE,
        "run-1",
    )
    assert items[run.uri_of["zero.png"]]["health_flags"] == []  # second shard: no column
    assert len({item["id"] for item in items.values()}) == 7
    readme = uris.read_bytes(os.path.join(folder, "README.txt")).decode()
    assert "corrected_caption" in readme and "factory review import" in readme


def test_csv_holds_the_same_items_with_facts_as_json_text(run, tmp_path):
    export_review(run.output, str(tmp_path / "j"), n=3)
    summary = export_review(run.output, str(tmp_path / "c"), n=3, format="csv")

    assert summary.review_file.endswith("review.csv")
    assert not os.path.exists(tmp_path / "c" / "review.jsonl")
    with open(summary.review_file, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["uri"] for row in rows] == run.lowest(3)
    assert json.loads(rows[0]["fact_checks"])[1]["verdict"] == "inconsistent"
    assert rows[0]["corrected_caption"] == ""
    from_csv = [entry.item for entry in read_review(summary.review_file)]
    from_jsonl = [entry.item for entry in read_review(str(tmp_path / "j" / "review.jsonl"))]
    assert from_csv == from_jsonl


def test_max_score_keeps_only_captions_at_or_below_it(run, tmp_path):
    export_review(run.output, str(tmp_path / "review"), n=50, max_score=0.25)
    scores = [item["critic_score"] for item in jsonl_items(str(tmp_path / "review"))]
    assert scores == [0.0, 0.125, 0.25]


def test_max_score_below_every_caption_says_the_lowest(run, tmp_path):
    with pytest.raises(NothingToReview, match=r"at or below -0\.5 .*lowest .* is 0\.000"):
        export_review(run.output, str(tmp_path / "review"), max_score=-0.5)
    assert not os.path.exists(tmp_path / "review")


def test_a_run_without_critic_columns_has_nothing_to_review(tmp_path):
    rows = [fakerun.row("a.png", 0, fakerun.SOURCES[0])]
    schema = pa.schema([f for f in fakerun.captions_schema() if f.name != "critic_score"])
    fakerun.write_shard(str(tmp_path / "run"), "part-1.parquet", rows, schema)
    with pytest.raises(NothingToReview, match="no critic_score column: the critic did not run"):
        export_review(str(tmp_path / "run"), str(tmp_path / "review"))


def test_a_run_where_the_critic_scored_nothing_has_nothing_to_review(tmp_path):
    unscored = fakerun.Source("u.png", (0, 0, 0), None)
    rows = [fakerun.row(f"u{i}.png", i, unscored) for i in range(3)]
    fakerun.write_shard(str(tmp_path / "run"), "part-1.parquet", rows, fakerun.captions_schema())
    with pytest.raises(NothingToReview, match="none of the 3 captions .* has a critic score"):
        export_review(str(tmp_path / "run"), str(tmp_path / "review"))


def test_a_folder_that_is_not_a_run_is_named(tmp_path):
    with pytest.raises(NothingToReview, match="no caption shards in .*captions"):
        export_review(str(tmp_path), str(tmp_path / "review"))


def test_refuses_a_non_empty_folder_and_keeps_the_edits(run, tmp_path):
    folder = tmp_path / "review"
    export_review(run.output, str(folder), n=5)
    edited = (
        (folder / "review.jsonl")
        .read_text()
        .replace('"corrected_caption": ""', '"corrected_caption": "mine"', 1)
    )
    (folder / "review.jsonl").write_text(edited)

    with pytest.raises(FolderNotEmpty, match="not empty .*review.jsonl.*overwrite"):
        export_review(run.output, str(folder), n=5)
    with pytest.raises(FolderNotEmpty):
        export_review(run.output, str(folder), n=5, format="csv")
    assert (folder / "review.jsonl").read_text() == edited


def test_refuses_a_folder_holding_anything(run, tmp_path):
    (tmp_path / "review").mkdir()
    (tmp_path / "review" / "notes.txt").write_text("someone's work")
    with pytest.raises(FolderNotEmpty, match="notes.txt"):
        export_review(run.output, str(tmp_path / "review"))


def test_overwrite_replaces_only_what_an_export_wrote(run, tmp_path):
    folder = tmp_path / "review"
    export_review(run.output, str(folder), n=6)
    (folder / "notes.txt").write_text("keep me")

    export_review(run.output, str(folder), n=2, format="csv", overwrite=True)

    assert sorted(os.listdir(folder)) == [
        "README.txt",
        "images",
        "notes.txt",
        "prompts.jsonl",
        "review.csv",
    ]
    assert len(os.listdir(folder / "images")) == 2  # the six earlier images are gone
    assert (folder / "notes.txt").read_text() == "keep me"


def test_overwrite_keeps_the_old_review_when_the_run_has_nothing(run, tmp_path):
    folder = tmp_path / "review"
    export_review(run.output, str(folder), n=2)
    with pytest.raises(NothingToReview):
        export_review(run.output, str(folder), max_score=-1.0, overwrite=True)
    assert len(jsonl_items(str(folder))) == 2


def test_missing_source_image_is_reported_not_fatal(run, tmp_path):
    gone = run.uri_of["zero.png"]
    os.remove(gone)
    summary = export_review(run.output, str(tmp_path / "review"), n=3)

    assert summary.missing_images == (gone,)
    assert "1 source images missing" in summary.line()
    items = {item["uri"]: item for item in jsonl_items(str(tmp_path / "review"))}
    assert items[gone]["image"] is None
    assert len(os.listdir(tmp_path / "review" / "images")) == 2


def test_s3_destination_holds_the_review_and_images(run, tmp_path, s3_bucket):
    folder = f"s3://{s3_bucket}/reviews/batch-1"
    summary = export_review(run.output, folder, n=4)

    assert summary.review_file == f"{folder}/review.jsonl"
    items = jsonl_items(folder)
    assert [item["uri"] for item in items] == run.lowest(4)
    for item in items:
        assert pixel(uris.read_bytes(f"{folder}/{item['image']}")) == run.colour_of[item["uri"]]
    assert uris.size_of(f"{folder}/README.txt")
    with pytest.raises(FolderNotEmpty):
        export_review(run.output, folder, n=4)
