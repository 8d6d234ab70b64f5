"""DetectStage: boxes for the row's best tags, typed, normalised, thresholded and capped."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pydantic import ValidationError

from factory import records
from factory.models.demo.vision import build_tiny_clip, build_tiny_owlvit
from factory.stage_kit.contract import MissingColumnsError
from factory.stages.clip import TAG_TYPE, ClipConfig, ClipStage
from factory.stages.detect import OBJECT_TYPE, DetectConfig, DetectStage
from tests import imagegen
from tests.helpers import listing

IMAGES = [imagegen.jpeg(120, 90, seed) for seed in range(3)]
PATCHES = 16  # the tiny OWL-ViT proposes one box per 8-px patch of its 32-px input


@pytest.fixture(scope="module")
def tiny_owlvit(tmp_path_factory) -> str:
    return build_tiny_owlvit(str(tmp_path_factory.mktemp("models") / "owlvit"))


@pytest.fixture(scope="module")
def stage(tiny_owlvit) -> DetectStage:
    return detect_stage(tiny_owlvit)


def tags(*labels: str) -> list[dict]:
    return [{"label": label, "score": 1.0 - i / 10} for i, label in enumerate(labels)]


def batch(images: list[bytes], row_tags: list[list[dict] | None]) -> pa.Table:
    table = listing([f"img{i}.jpg" for i in range(len(images))])
    table = table.append_column("image", pa.array(images, pa.binary()))
    return table.append_column("tags", pa.array(row_tags, pa.list_(TAG_TYPE)))


def detect_stage(model: str, **changes) -> DetectStage:
    settings = {"score_threshold": 0.0, "nms_iou": 1.0, "max_boxes": 100, **changes}
    return DetectStage(DetectConfig(model=model, **settings))


def test_objects_column_has_the_declared_type_and_normalised_boxes(stage):
    out = stage(batch(IMAGES[:2], [tags("horse", "rider"), tags("vase")]))
    assert out.schema.field("objects").type == pa.list_(OBJECT_TYPE)
    assert DetectStage.COLUMNS.adds == {"objects": pa.list_(OBJECT_TYPE)}
    objects = out.column("objects").to_pylist()
    assert [len(row) for row in objects] == [PATCHES, PATCHES]
    assert {o["label"] for o in objects[0]} <= {"horse", "rider"}  # bare labels, no template
    assert {o["label"] for o in objects[1]} == {"vase"}
    for found in objects[0] + objects[1]:
        x0, y0, x1, y1 = found["box"]
        assert 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0


def test_a_row_without_queries_gets_an_empty_list(stage):
    out = stage(batch(IMAGES[:3], [[], None, tags("ship")]))
    assert [len(row) for row in out.column("objects").to_pylist()] == [0, 0, PATCHES]
    assert out.column("status").to_pylist() == ["ok"] * 3


def test_queries_are_the_best_tags_then_extras_each_once(tiny_owlvit):
    picky = detect_stage(tiny_owlvit, queries_from_tags=2, extra_queries=["frame", "horse"])
    row = {"tags": tags("horse", "rider", "sword")}
    assert picky.queries(row) == ["horse", "rider", "frame"]
    assert picky.queries({"tags": None}) == ["frame", "horse"]
    out = picky(batch(IMAGES[:1], [row["tags"]]))
    assert {o["label"] for o in out.column("objects")[0].as_py()} <= {"horse", "rider", "frame"}


def test_threshold_and_cap(stage, tiny_owlvit):
    one_row = batch(IMAGES[:1], [tags("horse", "rider")])
    scores = [o["score"] for o in stage(one_row).column("objects")[0].as_py()]
    assert scores == sorted(scores, reverse=True)
    for changes, expected in [
        ({"max_boxes": 3}, 3),
        ({"score_threshold": scores[4]}, 5),  # at or above the 5th best
        ({"score_threshold": 1.0}, 0),
    ]:
        out = detect_stage(tiny_owlvit, **changes)(one_row)
        assert len(out.column("objects")[0].as_py()) == expected, changes


def test_rejected_rows_pass_through_and_bad_images_are_rejected_alone(stage):
    table = batch([IMAGES[0], b"not an image", IMAGES[1]], [tags("horse")] * 3)
    status = pa.array([records.REJECTED, records.OK, records.OK])
    table = table.set_column(table.column_names.index("status"), "status", status)
    out = stage(table)
    assert out.column("status").to_pylist() == ["rejected", "rejected", "ok"]
    assert out.column("reject_stage").to_pylist() == [None, "detect", None]
    assert out.column("objects").to_pylist()[:2] == [None, None]
    assert len(out.column("objects")[2].as_py()) == PATCHES


def test_needs_the_image(stage):
    with pytest.raises(MissingColumnsError, match="image"):
        stage(listing(["a.jpg"]))


def test_extra_queries_work_without_tags(tiny_owlvit):
    config = DetectConfig(model=tiny_owlvit, extra_queries=["horse"], score_threshold=0.0)
    table = listing(["a.jpg"]).append_column("image", pa.array([IMAGES[0]], pa.binary()))
    objects = DetectStage(config)(table).column("objects")[0].as_py()
    assert objects and {obj["label"] for obj in objects} == {"horse"}


def test_runs_on_what_the_clip_stage_adds(tiny_owlvit, tmp_path):
    clip_config = ClipConfig(
        model=build_tiny_clip(str(tmp_path / "clip")), tag_threshold=0.0, tag_top_k=4
    )
    clip = ClipStage(clip_config)
    detect = DetectStage(DetectConfig(model=tiny_owlvit, score_threshold=0.0, max_boxes=5))
    table = listing(["a.jpg", "b.jpg"]).append_column("image", pa.array(IMAGES[:2], pa.binary()))
    out = detect(clip(table))
    for row in out.to_pylist():
        assert 1 <= len(row["objects"]) <= 5
        assert {o["label"] for o in row["objects"]} <= {tag["label"] for tag in row["tags"]}


def test_config_defaults_and_validation():
    config = DetectConfig()
    assert config.model is None and config.queries_from_tags == 10 and config.extra_queries == []
    assert (config.resources.compute, config.resources.concurrency) == ("actors", 1)
    with pytest.raises(ValidationError, match="exactly one"):
        DetectConfig(query_template="{} and {}")
    with pytest.raises(ValueError, match="skips the stage"):
        DetectStage(config)
