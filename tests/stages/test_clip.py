"""ClipStage: category, tags and embedding columns from one CLIP forward per image."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from factory import records, vocab
from factory.models.demo.vision import build_tiny_clip
from factory.stage_kit.contract import MissingColumnsError
from factory.stages.clip import TAG_TYPE, ClipConfig, ClipStage, select_tags
from tests import imagegen
from tests.helpers import listing

TAXONOMY = vocab.load_vocabulary(vocab.MUSEUM_TAXONOMY)
CONCEPTS = vocab.load_vocabulary(vocab.ART_CONCEPTS)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    return build_tiny_clip(str(tmp_path_factory.mktemp("models") / "clip"))


@pytest.fixture(scope="module")
def stage(tiny_clip) -> ClipStage:
    return clip_stage(tiny_clip)


def batch(images: list[bytes]) -> pa.Table:
    table = listing([f"img{i}.jpg" for i in range(len(images))])
    return table.append_column("image", pa.array(images, pa.binary()))


def clip_stage(model: str, **changes) -> ClipStage:
    return ClipStage(ClipConfig(model=model, **{"tag_threshold": 0.0, "tag_top_k": 5, **changes}))


IMAGES = [imagegen.jpeg(120, 90, seed) for seed in range(3)]


def test_columns_have_the_declared_arrow_types(stage):
    out = stage(batch(IMAGES))
    for name, dtype in ClipStage.COLUMNS.adds.items():
        assert out.schema.field(name).type == dtype, name
    assert out.schema.field("tags").type == pa.list_(TAG_TYPE)
    assert out.column("status").to_pylist() == ["ok"] * 3


def test_category_is_the_best_taxonomy_label(stage):
    out = stage(batch(IMAGES)).to_pylist()
    for row in out:
        assert row["category"] in TAXONOMY
        # the best of a softmax over N labels scores at least 1/N
        assert 1 / len(TAXONOMY) <= row["category_score"] <= 1.0


def test_threshold_zero_keeps_exactly_top_k_tags_best_first(stage):
    for tags in stage(batch(IMAGES)).column("tags").to_pylist():
        assert len(tags) == 5
        assert len({tag["label"] for tag in tags}) == 5
        assert all(tag["label"] in CONCEPTS for tag in tags)
        scores = [tag["score"] for tag in tags]
        assert scores == sorted(scores, reverse=True)


def test_threshold_drops_tags_below_it(tiny_clip):
    everything = clip_stage(tiny_clip, tag_top_k=len(CONCEPTS))
    scores = [tag["score"] for tag in everything(batch(IMAGES[:1])).column("tags")[0].as_py()]
    threshold = scores[7]  # between the 7th and 8th best (no ties with random weights)
    kept = clip_stage(tiny_clip, tag_top_k=len(CONCEPTS), tag_threshold=threshold)
    assert len(kept(batch(IMAGES[:1])).column("tags")[0].as_py()) == 8
    nothing = clip_stage(tiny_clip, tag_threshold=1.0)(batch(IMAGES[:1]))
    assert nothing.column("tags").to_pylist() == [[]]  # an empty list, not a missing value


def test_embedding_is_a_unit_vector_unless_turned_off(stage, tiny_clip):
    embedding = np.array(stage(batch(IMAGES[:1])).column("embedding")[0].as_py())
    assert embedding.shape == (stage.model.dim,)
    assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)
    off = clip_stage(tiny_clip, embed=False)(batch(IMAGES[:1]))
    assert off.column("embedding").to_pylist() == [None]
    assert off.column("category")[0].as_py() in TAXONOMY


def test_batch_gives_what_each_image_gives_alone(stage):
    together = stage(batch(IMAGES)).to_pylist()
    alone = stage(batch(IMAGES[1:2])).to_pylist()[0]
    assert together[1]["category"] == alone["category"]
    assert [t["label"] for t in together[1]["tags"]] == [t["label"] for t in alone["tags"]]
    np.testing.assert_allclose(together[1]["embedding"], alone["embedding"], atol=1e-5)


def test_rejected_rows_pass_through_and_bad_images_are_rejected_alone(stage):
    table = batch([IMAGES[0], b"not an image", IMAGES[1]])
    status = pa.array([records.REJECTED, records.OK, records.OK])
    table = table.set_column(table.column_names.index("status"), "status", status)
    table = table.set_column(
        table.column_names.index("reject_stage"), "reject_stage", pa.array(["validate", None, None])
    )
    out = stage(table)
    assert out.column("status").to_pylist() == ["rejected", "rejected", "ok"]
    assert out.column("reject_stage").to_pylist() == ["validate", "clip", None]
    assert out.column("category").to_pylist()[:2] == [None, None]
    assert out.column("category")[2].as_py() in TAXONOMY


def test_custom_lists_and_template(tiny_clip, tmp_path):
    (tmp_path / "kinds.txt").write_text("# mine\nicon\nvase\n", encoding="utf-8")
    (tmp_path / "things.txt").write_text("saint\nhalo\ngold\n", encoding="utf-8")
    config = ClipConfig(
        model=tiny_clip,
        taxonomy=str(tmp_path / "kinds.txt"),
        vocabulary=str(tmp_path / "things.txt"),
        prompt_template="an old {} in a museum",
        tag_threshold=0.0,
        tag_top_k=10,
    )
    row = ClipStage(config)(batch(IMAGES[:1])).to_pylist()[0]
    assert row["category"] in ("icon", "vase")
    assert sorted(tag["label"] for tag in row["tags"]) == ["gold", "halo", "saint"]
    assert sum(tag["score"] for tag in row["tags"]) == pytest.approx(1.0, abs=1e-5)


def test_missing_image_column_fails_loudly(stage):
    with pytest.raises(MissingColumnsError, match="image"):
        stage(listing(["a.jpg"]))


def test_config_defaults_and_validation():
    config = ClipConfig()
    assert config.model is None
    assert (config.taxonomy, config.vocabulary) == (vocab.MUSEUM_TAXONOMY, vocab.ART_CONCEPTS)
    resources = config.resources
    assert (resources.compute, resources.concurrency, resources.num_cpus) == ("actors", 1, 1)
    assert resources.batch_size == 16
    with pytest.raises(ValidationError, match="exactly one"):
        ClipConfig(prompt_template="a photo")
    with pytest.raises(ValueError, match="skips the stage"):
        ClipStage(config)


def test_select_tags_breaks_ties_by_list_order():
    scores = np.array([0.2, 0.5, 0.2, 0.1])
    tags = select_tags(["a", "b", "c", "d"], scores, threshold=0.15, top_k=10)
    assert [tag["label"] for tag in tags] == ["b", "a", "c"]
    assert select_tags(["a", "b"], np.array([0.3, 0.7]), threshold=0.0, top_k=0) == []
