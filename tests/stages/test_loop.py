"""The caption loop's stages chained in-process, with scripted engines in place of models.

What is under test is the stages: prompts rendered, outputs parsed, columns, scores,
rejections and lineage. The engines themselves are tested in tests/models.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from factory.stage_kit.chat_step import ChatStep
from factory.stages.caption import CaptionConfig, CaptionStage
from factory.stages.critic import CriticConfig, CriticStage
from factory.stages.decompose import DecomposeConfig, DecomposeStage
from factory.stages.expand import ExpandConfig, ExpandStage
from factory.stages.health import HealthConfig, HealthStage, text_columns
from factory.stages.qa import QAConfig, QAStage
from factory.stages.rewrite import RewriteConfig, RewriteStage
from factory.text.parse import CANNOT_TELL
from tests import imagegen
from tests.helpers import listing
from tests.scripted_engine import CAPTION, FACTS, REWRITTEN

SCRIPTED = "tests.scripted_engine:ScriptedEngine"


def engine(role: str) -> dict:
    return {"kind": SCRIPTED, "model": role}


def step(role: str, prompt: str) -> ChatStep:
    return ChatStep(engine=engine(role), prompt=prompt)


def images(n: int = 2, **catalogue: list) -> pa.Table:
    table = listing([f"img{i}.jpg" for i in range(n)])
    for name, values in catalogue.items():
        table = table.set_column(table.column_names.index(name), name, pa.array(values))
    return table.append_column("image", pa.array([imagegen.jpeg(64, 48, i) for i in range(n)]))


def run(table: pa.Table, *stages) -> pa.Table:
    for stage in stages:
        table = stage(table)
    return table


def loop(critic_role: str = "critic", **health) -> list:
    caption = CaptionStage(
        CaptionConfig(engine=engine("captioner"), styles={"detailed": "caption_fusion"})
    )
    stages = [
        caption,
        ExpandStage(
            ExpandConfig(
                questions=step("asker", "expand_questions"),
                answer=step("answerer", "expand_answer"),
            )
        ),
        DecomposeStage(DecomposeConfig(step=step("decomposer", "decompose"))),
        CriticStage(CriticConfig(step=step(critic_role, "critic"))),
        RewriteStage(RewriteConfig(step=step("rewriter", "rewrite"))),
    ]
    adds = {k: v for s in stages for k, v in columns(s).adds.items()}
    stages.append(HealthStage(HealthConfig(**health), text_columns(adds)))
    return stages


def columns(stage):
    # config-dependent stages keep theirs on the instance, the others on the class
    return getattr(stage, "columns", None) or stage.COLUMNS


def test_whole_loop_fills_every_column_with_parsed_values_and_lineage():
    out = run(images(2), *loop()).to_pylist()
    assert [row["status"] for row in out] == ["ok", "ok"]
    row = out[0]
    assert row["caption_detailed"] == CAPTION  # preamble and quotes stripped
    dims = [q["dimension"] for q in row["expansion_questions"]]
    assert dims == ["spatial layout", "visual style", "scene/setting"]
    assert row["expanded_caption"].startswith(CAPTION) and "daytime" in row["expanded_caption"]
    assert row["draft_caption"] == row["expanded_caption"] and row["draft_style"] == "detailed"
    assert row["facts"] == list(FACTS)
    verdicts = [c["verdict"] for c in row["fact_checks"]]
    assert verdicts == ["consistent", "consistent", "unverifiable", "inconsistent"]
    assert row["fact_checks"][3]["correction"] == "No fence is visible."
    assert row["critic_score"] == pytest.approx(0.5)
    assert row["final_caption"] == REWRITTEN
    assert row["health_flags"] == []
    lineages = {name: row[name] for name in row if name.endswith("_lineage")}
    assert set(lineages) == {
        "caption_detailed_lineage",
        "expansion_questions_lineage",
        "expanded_caption_lineage",
        "draft_caption_lineage",
        "facts_lineage",
        "critic_lineage",
        "final_caption_lineage",
    }
    assert lineages["final_caption_lineage"]["prompt_template"] == "rewrite.v1"
    assert lineages["draft_caption_lineage"] == lineages["expanded_caption_lineage"]
    assert all(len(lineage["prompt_sha256"]) == 64 for lineage in lineages.values())


def test_the_rewrite_prompt_carries_the_verdicts_and_skips_clean_captions():
    stages = loop()
    run(images(1), *stages)
    rewriter = stages[4].prompted.engine
    (prompt,) = rewriter.prompts[-1:]
    assert "[inconsistent] A wooden fence is beside the horse." in prompt
    assert "No fence is visible." in prompt
    calls_before = len(rewriter.prompts)
    out = run(images(1), *loop(critic_role="all_consistent")).to_pylist()[0]
    assert out["critic_score"] == 1.0
    assert out["final_caption"] == out["draft_caption"]
    assert out["final_caption_lineage"] == out["draft_caption_lineage"]
    assert len(rewriter.prompts) == calls_before  # the same shared engine got no call


def test_unparseable_verdicts_reject_the_record_with_the_critic_reason():
    out = run(images(2), *loop(critic_role="mumbler")).to_pylist()
    assert {row["status"] for row in out} == {"rejected"}
    assert {(row["reject_stage"], row["reason"]) for row in out} == {("critic", "no_verdicts")}
    assert "hmm" in out[0]["detail"]


def test_empty_model_output_is_a_specific_rejection_per_stage():
    captioner = CaptionStage(
        CaptionConfig(engine=engine("silent"), styles={"objective": "caption_objective"})
    )
    row = captioner(images(1)).to_pylist()[0]
    assert (row["status"], row["reject_stage"]) == ("rejected", "caption")
    assert row["reason"] == "objective_empty"
    asker = ExpandStage(
        ExpandConfig(
            style="objective",
            questions=step("silent", "expand_questions"),
            answer=step("answerer", "expand_answer"),
        )
    )
    table = images(1).append_column("caption_objective", pa.array(["A horse."]))
    row = asker(table).to_pylist()[0]
    assert (row["reject_stage"], row["reason"]) == ("expand", "questions_empty")


def test_styles_each_get_a_column_and_formal_analysis_never_sees_the_catalogue():
    stage = CaptionStage(
        CaptionConfig(
            engine=engine("captioner"),
            styles={"detailed": "caption_fusion", "formal_analysis": "caption_formal_analysis"},
        )
    )
    table = images(1, title=["The Harvesters"], creator=["Pieter Bruegel"])
    table = table.append_column("knowledge", pa.array(["- title: The Harvesters"]))
    row = stage(table).to_pylist()[0]
    assert row["caption_detailed"] == CAPTION and row["caption_formal_analysis"] == CAPTION
    assert row["caption_formal_analysis_lineage"]["prompt_template"].startswith(
        "caption_formal_analysis.v"
    )
    prompts = stage.styles["detailed"].engine.prompts[-2:]
    assert sum("The Harvesters" in p for p in prompts) == 1  # only the detailed prompt


def test_qa_pairs_are_parsed_per_category_with_cannot_tell():
    stage = QAStage(QAConfig(step=step("qa", "qa")))
    row = stage(images(1)).to_pylist()[0]
    assert row["status"] == "ok"
    assert [(p["category"], p["answer"]) for p in row["qa"]] == [
        ("subject", "a red horse"),
        ("creator", CANNOT_TELL),
    ]
    assert row["qa_lineage"]["prompt_template"].startswith("qa.v")
    assert "subject, title, creator" in stage.prompted.engine.prompts[-1]


def test_health_rejects_configured_rules_and_only_flags_the_rest():
    formal = CaptionStage(
        CaptionConfig(engine=engine("leaky"), styles={"formal_analysis": "caption_formal_analysis"})
    )
    table = formal(images(1, title=["The Harvesters"], creator=["Pieter Bruegel"]))
    texts = text_columns(formal.columns.adds)
    assert texts == ("caption_formal_analysis",)
    rejected = HealthStage(HealthConfig(), texts)(table).to_pylist()[0]
    assert (rejected["reject_stage"], rejected["reason"]) == ("health", "title_leak")
    flagged = HealthStage(HealthConfig(reject_on=[]), texts)(table).to_pylist()[0]
    assert flagged["status"] == "ok"
    rules = {f["rule"] for f in flagged["health_flags"]}
    assert {"title_leak", "creator_leak"} <= rules
    assert {f["field"] for f in flagged["health_flags"]} == {"caption_formal_analysis"}


def decompose(role: str) -> dict:
    stage = DecomposeStage(DecomposeConfig(step=step(role, "decompose"), max_facts=5))
    table = images(1).append_column("caption_detailed", pa.array([CAPTION]))
    lineage = {"model": "m", "revision": "r", "engine": "e"}
    table = table.append_column("caption_detailed_lineage", pa.array([lineage]))
    return stage(table).to_pylist()[0] | {"schema": stage.prompted.engine.schemas[-1]}


def test_structured_steps_send_their_schema_and_validate_the_reply_first():
    row = decompose("strict_facts")
    assert row["status"] == "ok" and row["facts"] == list(FACTS[:2])
    assert row["schema"]["properties"]["facts"]["maxItems"] == 5
    assert row["facts_lineage"]["prompt_template"] == "decompose.v2"


def test_a_constraining_engines_invalid_reply_is_rejected_not_parsed_leniently():
    row = decompose("strict_prose")
    assert (row["reject_stage"], row["reason"]) == ("decompose", "facts_invalid_json")
    assert "A horse is red" in row["detail"]


def test_a_cut_off_reply_is_rejected_as_truncated_with_its_finish_reason():
    row = decompose("cut")
    assert (row["reject_stage"], row["reason"]) == ("decompose", "facts_truncated")
    assert "finish_reason length" in row["detail"] and "A red horse" in row["detail"]
    table = images(1).append_column("facts", pa.array([list(FACTS)]))
    table = table.append_column("draft_caption", pa.array([CAPTION]))
    critic = CriticStage(CriticConfig(step=step("cut", "critic")))
    row = critic(table).to_pylist()[0]
    assert (row["reject_stage"], row["reason"]) == ("critic", "critic_truncated")
