"""Caption each accepted image with a chat engine and a versioned prompt template."""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from factory import records
from factory.models.engine import ChatRequest, EngineConfig, GenerationParams
from factory.prompts import load_prompt
from factory.prompts.fusion import AUXILIARY_COLUMNS, auxiliary_block
from factory.stages.base import Columns, Resources, Row, StageConfig, map_batch


class CaptionConfig(StageConfig):
    engine: EngineConfig = Field(
        default_factory=lambda: EngineConfig(model="builtin://tiny-llava"),
        description="which model and engine write the captions",
    )
    prompt: str = Field("caption_detailed", description="prompt template: name or name.vN")
    generation: GenerationParams = Field(default_factory=GenerationParams)
    auxiliary: bool = Field(
        True,
        description="put the expert outputs and catalogue knowledge the batch has into the "
        "prompt (the fusion prompt's visual auxiliary information)",
    )
    # half a CPU by default so the offline profile (OCR + captioner + tasks) fits 2 cores;
    # GPU presets set num_gpus instead
    resources: Resources = Field(
        default_factory=lambda: Resources(
            compute="actors", concurrency=1, batch_size=8, num_cpus=0.5
        )
    )


class CaptionStage:
    COLUMNS = Columns(
        stage="caption",
        needs=("image",),
        optional=AUXILIARY_COLUMNS,
        adds={"caption": pa.string(), "caption_lineage": records.LINEAGE_TYPE},
    )

    def __init__(self, config: CaptionConfig):
        from factory.models.engine import load_engine

        self.config = config
        self.template = load_prompt(config.prompt)
        self.engine = load_engine(config.engine)
        info = self.engine.info
        self.lineage = {
            "model": info.model,
            "revision": info.revision,
            "engine": info.engine,
            "prompt_template": self.template.id,
            "prompt_sha256": self.template.sha256,
        }

    def __call__(self, batch: pa.Table) -> pa.Table:
        return map_batch(batch, self.COLUMNS, self._caption)

    def _caption(self, rows: list[Row]) -> list[Row]:
        requests = [ChatRequest(prompt=self._prompt(row), image=row["image"]) for row in rows]
        texts = self.engine.generate(requests, self.config.generation)
        return [{"caption": text, "caption_lineage": self.lineage} for text in texts]

    def _prompt(self, row: Row) -> str:
        auxiliary = auxiliary_block(row) if self.config.auxiliary else ""
        return self.template.render(auxiliary=auxiliary)
