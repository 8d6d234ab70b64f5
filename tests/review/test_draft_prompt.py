"""The exact prompt of a draft, rebuilt at export: what the draft's model saw."""

from __future__ import annotations

import json

from factory.prompts import load_prompt
from factory.review.draft_prompt import CaptionPromptSettings, draft_prompt, read_settings

OCR = [{"text": "SALVE", "box": [0.1, 0.1, 0.3, 0.2], "score": 0.9}]
ROW = {
    "draft_style": "detailed",
    "draft_caption_lineage": {"prompt_template": "caption_fusion.v1"},
    "caption_detailed": "A red boat on a grey sea.",
    "ocr": OCR,
    "knowledge": "Catalogue record:\n- title: The Red Boat",
    "expansion_questions": [
        {"dimension": "spatial layout", "question": "Where is the boat?"},
        {"dimension": "visual style", "question": "Is it painted?"},
    ],
}


def test_a_first_pass_draft_gets_the_expert_notes_and_the_catalogue():
    prompt = draft_prompt(ROW, CaptionPromptSettings())
    assert '"SALVE" at [0.10, 0.10, 0.30, 0.20]' in prompt and "The Red Boat" in prompt
    assert prompt.startswith(load_prompt("caption_fusion.v1").render()[:80])
    assert "{auxiliary}" not in prompt


def test_a_withheld_style_never_saw_the_catalogue():
    row = ROW | {"draft_style": "formal_analysis"}
    prompt = draft_prompt(row, CaptionPromptSettings())
    assert "SALVE" in prompt and "The Red Boat" not in prompt
    assert "SALVE" not in draft_prompt(ROW, CaptionPromptSettings(auxiliary=False))


def test_an_expanded_draft_gets_its_caption_and_questions():
    row = ROW | {"draft_caption_lineage": {"prompt_template": "expand_answer.v1"}}
    prompt = draft_prompt(row, CaptionPromptSettings())
    assert "A red boat on a grey sea." in prompt
    assert "1. Where is the boat?\n2. Is it painted?" in prompt


def test_settings_come_from_the_runs_config(tmp_path):
    assert read_settings(str(tmp_path)) == CaptionPromptSettings()
    config = {"caption": {"auxiliary": False, "withhold_catalogue": ["objective"]}}
    (tmp_path / "run.json").write_text(json.dumps({"config": config}))
    assert read_settings(str(tmp_path)) == CaptionPromptSettings(False, ("objective",))


def test_prompts_travel_beside_the_review_file(tmp_path):
    from factory.review.draft_prompt import encode_prompts, read_prompts

    review_file = str(tmp_path / "review.csv")
    assert read_prompts(review_file) == {}  # an export from before prompts were recorded
    prompts = {"a1": "Describe.\n\nCatalogue record:\n- title: «Vague»", "b2": "Look."}
    (tmp_path / "prompts.jsonl").write_bytes(encode_prompts(prompts))
    assert read_prompts(review_file) == prompts
