from factory.prompts.fusion import auxiliary_block
from factory.prompts.knowledge import knowledge_block
from factory.stages.knowledge import KnowledgeConfig, KnowledgeStage
from tests.helpers import listing


def test_formal_analysis_keeps_identities_from_the_model():
    row = {"title": "The Harvesters", "creator": "Bruegel", "medium": "oil on wood"}
    assert "Bruegel" in knowledge_block(row, name_identities=True)
    hidden = knowledge_block(row, name_identities=False)
    assert "Bruegel" not in hidden and "Harvesters" not in hidden and "oil on wood" in hidden
    assert knowledge_block({"title": "  "}, name_identities=True) is None


def test_stage_adds_knowledge_from_catalogue_columns():
    table = listing(["a", "b"])
    table = table.set_column(table.column_names.index("title"), "title", [["Wave", None]])
    out = KnowledgeStage(KnowledgeConfig(name_identities=True))(table)
    assert out.column("knowledge").to_pylist() == ["- title: Wave", None]


def test_auxiliary_block_renders_boxes_text_and_category():
    row = {
        "category": "print",
        "category_score": 0.87,
        "objects": [{"label": "boat", "score": 0.5, "box": [0.5, 0.1, 0.95, 0.6]}],
        "ocr": [{"text": "KANAGAWA", "score": 0.9, "box": [0.02, 0.05, 0.2, 0.12]}],
        "tags": [{"label": "wave", "score": 0.3}],
        "knowledge": "- creator: Hokusai",
    }
    block = auxiliary_block(row)
    assert "- category: print (0.87)" in block
    assert "boat[0.50, 0.10, 0.95, 0.60]" in block
    assert '"KANAGAWA" at [0.02, 0.05, 0.20, 0.12]' in block
    assert "- tags: wave" in block
    assert block.index("Visual auxiliary") < block.index("Catalogue record")
    assert auxiliary_block({}) == ""
