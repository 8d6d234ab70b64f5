import pyarrow as pa
import pytest

from factory.models.demo.chat_models import build_tiny_llava
from factory.models.engine import EngineConfig
from factory.stages.caption import CaptionConfig, CaptionStage
from tests import imagegen
from tests.helpers import listing


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return build_tiny_llava(str(tmp_path_factory.mktemp("models") / "tiny"))


def batch(images: list[bytes], **catalogue) -> pa.Table:
    table = listing([f"img{i}.jpg" for i in range(len(images))])
    for name, values in catalogue.items():
        table = table.set_column(table.column_names.index(name), name, pa.array(values))
    return table.append_column("image", pa.array(images, pa.binary()))


def stage(model: str, **engine) -> CaptionStage:
    return CaptionStage(CaptionConfig(engine=EngineConfig(model=model, **engine)))


def test_every_ok_row_gets_a_caption_with_lineage(tiny_model):
    out = stage(tiny_model)(batch([imagegen.jpeg(120, 90, s) for s in range(3)]))
    # random weights: a reply may be empty, which is a rejection, never a crash
    ok = [row for row in out.to_pylist() if row["status"] == "ok"]
    assert ok and all(row["caption_detailed"].strip() for row in ok)
    rejected = [row for row in out.to_pylist() if row["status"] != "ok"]
    assert all(row["reason"] in {"detailed_empty", "detailed_refusal"} for row in rejected)
    lineage = [row["caption_detailed_lineage"] for row in ok]
    assert {row["prompt_template"] for row in lineage} == {"caption_fusion.v1"}
    assert lineage[0]["engine"] == "transformers" and lineage[0]["model"] == tiny_model
    assert len(lineage[0]["revision"]) >= 8


def test_an_image_the_engine_cannot_read_is_rejected_alone(tiny_model):
    out = stage(tiny_model)(batch([imagegen.jpeg(120, 90, 1), b"not an image"]))
    assert out.column("reject_stage").to_pylist()[1] == "caption"
    assert out.column("reason").to_pylist()[1] == "error"
    assert out.column("caption_detailed_lineage")[1].as_py() is None


def test_prompt_carries_the_auxiliary_information_the_batch_has(tiny_model):
    captioner = stage(tiny_model)
    row = {"knowledge": "- title: The Harvesters", "category": "painting"}
    prompt = captioner.styles["detailed"].template.render(
        auxiliary=captioner._auxiliary(row, "detailed")
    )
    assert "- title: The Harvesters" in prompt and "- category: painting" in prompt
    assert "Catalogue record" not in captioner._auxiliary({}, "detailed")
    assert "The Harvesters" not in captioner._auxiliary(row, "formal_analysis")


@pytest.mark.gpu
def test_cuda_captions_match_cpu_and_bf16_runs(tiny_model):
    images = batch([imagegen.jpeg(200, 150, s) for s in range(4)])
    on_cpu = stage(tiny_model, device="cpu", dtype="float32")(images)
    on_gpu = stage(tiny_model, device="cuda", dtype="float32")(images)
    column = "caption_detailed"
    assert on_gpu.column(column).to_pylist() == on_cpu.column(column).to_pylist()
    half = stage(tiny_model, device="cuda", dtype="bfloat16")(images)
    assert half.column("reject_stage").to_pylist() == on_cpu.column("reject_stage").to_pylist()
