import pytest

from factory.pipeline import (
    ResourceError,
    StageStep,
    check_fits,
    check_wiring,
    input_block_rows,
    skipped_stages,
    stage_steps,
)
from factory.run_config import load_run_config
from factory.stage_kit.contract import MissingColumnsError, Resources
from factory.stages.caption import CaptionStage
from factory.stages.validate import ValidateStage


def test_default_plan_is_wired_and_fits_two_cpus():
    steps = stage_steps(load_run_config(), resume_from=None)
    names = [step.columns.stage for step in steps]
    expected = ["read", "validate", "fingerprint", "dedup", "ocr", "knowledge", "caption"]
    assert names == [*expected, "health"]
    check_wiring(steps)
    check_fits(steps, cpus=2, gpus=0)
    loop = {"qa", "expand", "decompose", "critic", "rewrite"}
    assert set(skipped_stages(load_run_config())) == {"clip", "detect"} | loop


def test_ultra_preset_runs_the_whole_loop_in_order_and_fits_two_cpus():
    steps = stage_steps(load_run_config("jobs/configs/caption_ultra.yaml"), resume_from=None)
    names = [step.columns.stage for step in steps]
    loop = ["caption", "qa", "expand", "decompose", "critic", "rewrite", "health"]
    assert names[-len(loop) :] == loop
    check_fits(steps, cpus=2, gpus=0)
    health = steps[-1]
    assert health.kwargs["text_columns"] == (
        "caption_detailed",
        "caption_objective",
        "caption_formal_analysis",
        "expanded_caption",
        "final_caption",
    )


def test_loop_stages_without_their_inputs_are_refused_before_any_work():
    with pytest.raises(MissingColumnsError, match="'critic' needs \\['facts', 'draft_caption'\\]"):
        stage_steps(load_run_config(None, ["critic={}"]), resume_from=None)
    with pytest.raises(MissingColumnsError, match="caption_objective"):
        stage_steps(load_run_config(None, ["decompose={style: objective}"]), resume_from=None)
    with pytest.raises(ValueError, match="must name the same caption style"):
        load_run_config(None, ["expand={style: objective}", "decompose={style: detailed}"])


def test_gpu_preset_names_each_model_once():
    config = load_run_config("jobs/configs/caption_ultra_gpu.yaml")
    assert set(config.models) == {"vlm", "llm"}
    assert {config.caption.model, config.critic.step.model, config.expand.answer.model} == {"vlm"}
    assert {config.rewrite.step.model, config.expand.questions.model} == {"llm"}
    assert all(spec.engine.kind == "vllm" for spec in config.models.values())


def test_configured_experts_join_the_plan_in_order():
    config = load_run_config(None, ["clip.model=/m/clip", "detect.model=/m/owl", "knowledge=null"])
    names = [step.columns.stage for step in stage_steps(config, resume_from=None)]
    expected = ["read", "validate", "fingerprint", "clip", "dedup", "ocr", "detect", "caption"]
    assert names == [*expected, "health"]
    skipped = skipped_stages(config)
    assert skipped["knowledge"] == "switched off (knowledge: null)"
    assert "clip" not in skipped and "detect" not in skipped


def test_detect_needs_tags_or_its_own_queries():
    with pytest.raises(ValueError, match="detect has nothing to look for"):
        stage_steps(load_run_config(None, ["detect.model=/m/owl"]), resume_from=None)
    queries = load_run_config(None, ["detect.model=/m/owl", "detect.extra_queries=[horse]"])
    check_wiring(stage_steps(queries, resume_from=None))


def test_a_stage_before_its_inputs_is_refused_at_build_time():
    steps = stage_steps(load_run_config(), resume_from=None)
    caption = next(step for step in steps if step.fn is CaptionStage)
    with pytest.raises(MissingColumnsError, match="'caption' needs \\['image'\\]"):
        check_wiring([caption])


def test_actor_reservations_that_starve_tasks_are_refused():
    big = StageStep(
        ValidateStage,
        {},
        Resources(compute="actors", concurrency=2, num_cpus=1),
        ValidateStage.COLUMNS,
    )
    with pytest.raises(ResourceError, match="need 2.25 CPUs"):
        check_fits([big], cpus=2, gpus=0)
    caption = CaptionStage.columns_for(load_run_config().caption)
    gpu = StageStep(CaptionStage, {}, Resources(compute="actors", num_gpus=1), caption)
    with pytest.raises(ResourceError, match="GPUs"):
        check_fits([gpu], cpus=8, gpus=0)


def test_input_blocks_are_capped_by_growing_them():
    config = load_run_config(None, ["ray.rows_per_block=32", "ray.max_input_blocks=512"])
    assert input_block_rows(7, config) == 32
    assert input_block_rows(32 * 512, config) == 32
    assert input_block_rows(100_000, config) == 196  # 511 blocks
    assert input_block_rows(10_000_000, config) == 19532  # still 512 blocks
