"""Caption each accepted image in one or more styles with a chat engine.

Each style has its own prompt template; the column `caption_<style>` holds the text and
`caption_<style>_lineage` what made it. The fusion prompts see the experts' outputs and
the catalogue record (the visual auxiliary information); styles in `withhold_catalogue`
never see the catalogue, so a formal analysis cannot recite the label's title and artist.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from factory import records
from factory.models.demo import DEMO_VLM
from factory.models.engine import EngineConfig, GenerationParams
from factory.prompts import STYLE_PROMPTS
from factory.prompts.fusion import AUXILIARY_COLUMNS, auxiliary_block
from factory.stage_kit.chat_step import ChatStep, PromptedEngine
from factory.stage_kit.contract import Columns, Resources, Row, StageConfig, map_batch
from factory.stage_kit.step_call import call_text


class CaptionConfig(StageConfig):
    model: str | None = Field(
        None,
        description="a model named in the run's `models:` section (its engine and placement "
        "replace `engine`); None: `engine`, loaded in the stage",
    )
    adapter: str | None = Field(
        None, description="LoRA adapter of the model the captions are written with; None: base"
    )
    engine: EngineConfig = Field(
        default_factory=lambda: EngineConfig(model=DEMO_VLM),
        description="which model and engine write the captions",
    )
    styles: dict[str, str] = Field(
        default_factory=lambda: {"detailed": STYLE_PROMPTS["detailed"]},
        description="style -> prompt template; one caption_<style> column each. Shipped: "
        + ", ".join(f"{style}: {prompt}" for style, prompt in STYLE_PROMPTS.items()),
        min_length=1,
    )
    generation: GenerationParams = Field(default_factory=GenerationParams)
    auxiliary: bool = Field(
        True,
        description="put the expert outputs and catalogue knowledge the batch has into the "
        "prompt (the fusion prompt's visual auxiliary information)",
    )
    withhold_catalogue: list[str] = Field(
        default_factory=lambda: ["formal_analysis"],
        description="styles whose prompt never sees the catalogue record (title, creator): "
        "the model must describe what it sees, not recite the label",
    )
    # half a CPU by default so the offline profile (OCR + captioner + tasks) fits 2 cores;
    # GPU presets set num_gpus instead
    resources: Resources = Field(
        default_factory=lambda: Resources(
            compute="actors", concurrency=1, batch_size=8, num_cpus=0.5
        )
    )


class CaptionStage:
    @staticmethod
    def columns_for(config: CaptionConfig) -> Columns:
        adds: dict[str, pa.DataType] = {}
        for style in config.styles:
            adds[records.caption_column(style)] = pa.string()
            adds[records.lineage_column(records.caption_column(style))] = records.LINEAGE_TYPE
        return Columns(stage="caption", needs=("image",), optional=AUXILIARY_COLUMNS, adds=adds)

    def __init__(self, config: CaptionConfig):
        self.config = config
        self.columns = self.columns_for(config)
        self.styles = {
            style: PromptedEngine(
                ChatStep(
                    model=config.model,
                    adapter=config.adapter,
                    engine=config.engine,
                    prompt=prompt,
                    generation=config.generation,
                )
            )
            for style, prompt in config.styles.items()
        }

    def __call__(self, batch: pa.Table) -> pa.Table:
        return map_batch(batch, self.columns, self._caption)

    def _caption(self, rows: list[Row]) -> list[Row | records.Rejection]:
        results: list[Row | records.Rejection] = [{} for _ in rows]
        for style, prompted in self.styles.items():
            calls = [({"auxiliary": self._auxiliary(row, style)}, row["image"]) for row in rows]
            for position, outcome in enumerate(call_text(prompted, calls, style)):
                result = results[position]
                if isinstance(result, records.Rejection):
                    continue
                if not outcome.ok:
                    results[position] = outcome.rejection
                    continue
                result[records.caption_column(style)] = outcome.value
                result[records.lineage_column(records.caption_column(style))] = outcome.lineage
        return results

    def _auxiliary(self, row: Row, style: str) -> str:
        if not self.config.auxiliary:
            return ""
        if style in self.config.withhold_catalogue:
            row = {key: value for key, value in row.items() if key != "knowledge"}
        return auxiliary_block(row)
