import pytest

from factory.config import load_config
from factory.pipeline import (
    ResourceError,
    StageStep,
    check_fits,
    check_wiring,
    skipped_stages,
    stage_steps,
)
from factory.stages.base import MissingColumnsError, Resources
from factory.stages.caption import CaptionStage
from factory.stages.validate import ValidateStage


def test_default_plan_is_wired_and_fits_two_cpus():
    steps = stage_steps(load_config(), resume_from=None)
    names = [step.fn.COLUMNS.stage for step in steps]
    assert names == ["read", "validate", "fingerprint", "dedup", "ocr", "knowledge", "caption"]
    check_wiring(steps)
    check_fits(steps, cpus=2, gpus=0)
    assert set(skipped_stages(load_config())) == {"clip", "detect"}


def test_configured_experts_join_the_plan_in_order():
    config = load_config(None, ["clip.model=/m/clip", "detect.model=/m/owl", "knowledge=null"])
    names = [step.fn.COLUMNS.stage for step in stage_steps(config, resume_from=None)]
    assert names == ["read", "validate", "fingerprint", "clip", "dedup", "ocr", "detect", "caption"]
    assert skipped_stages(config) == {"knowledge": "switched off (knowledge: null)"}


def test_detect_needs_tags_or_its_own_queries():
    with pytest.raises(ValueError, match="detect has nothing to look for"):
        stage_steps(load_config(None, ["detect.model=/m/owl"]), resume_from=None)
    queries = load_config(None, ["detect.model=/m/owl", "detect.extra_queries=[horse]"])
    check_wiring(stage_steps(queries, resume_from=None))


def test_a_stage_before_its_inputs_is_refused_at_build_time():
    steps = stage_steps(load_config(), resume_from=None)
    caption = next(step for step in steps if step.fn is CaptionStage)
    with pytest.raises(MissingColumnsError, match="'caption' needs \\['image'\\]"):
        check_wiring([caption])


def test_actor_reservations_that_starve_tasks_are_refused():
    big = StageStep(ValidateStage, {}, Resources(compute="actors", concurrency=2, num_cpus=1))
    with pytest.raises(ResourceError, match="need 2.25 CPUs"):
        check_fits([big], cpus=2, gpus=0)
    gpu = StageStep(CaptionStage, {}, Resources(compute="actors", num_gpus=1))
    with pytest.raises(ResourceError, match="GPUs"):
        check_fits([gpu], cpus=8, gpus=0)
