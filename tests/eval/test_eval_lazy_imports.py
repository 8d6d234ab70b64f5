"""The eval modules a caption run and `factory eval` import first stay light.

The runner imports the report builder after every run, so it must not drag in torch,
transformers, matplotlib or the JVM-backed scorers before they are needed.
"""

from __future__ import annotations

from tests.test_lazy_imports import HEAVY_MODULES, _modules_loaded_by

EVAL_MODULES = (
    "factory.eval.eval_config",
    "factory.eval.run_report",
    "factory.eval.metrics_report",
    "factory.eval.score_tables",
    "factory.eval.eval_command",
    "factory.eval.captioning",
    "factory.eval.diversity",
    "factory.eval.vqa",
    "factory.eval.hallucination",
    "factory.eval.clipscore",
)
# heavy or slow to import, loaded only by the function that uses them
EVAL_HEAVY = ("matplotlib", "pycocoevalcap", "rouge_score", "nltk", "rapidfuzz", "PIL.ImageFont")


def test_eval_modules_import_light():
    loaded = _modules_loaded_by(EVAL_MODULES)
    assert set(EVAL_MODULES) <= loaded
    assert [name for name in (*HEAVY_MODULES, *EVAL_HEAVY) if name in loaded] == []
