"""`load_engine`: the engine an `EngineConfig` names, built where it runs.

Apart from the protocol (engine.py), which every engine module imports: the loader
imports the engines.
"""

from __future__ import annotations

from factory import plugins
from factory.models.engine import ENGINE_IMPLEMENTATIONS, Engine, EngineConfig, known_kind


def load_engine(config: EngineConfig) -> Engine:
    """Build the engine `config.kind` names; its heavy imports happen here, not at import.

    The transformers engine takes adapters through PEFT, all of them kept loaded.
    """
    if config.kind == "transformers" and config.adapters:
        from factory.models.peft_adapters import PeftAdapterEngine

        base = config.model_copy(update={"adapters": {}})
        return PeftAdapterEngine(base, dict(config.adapters), max_loaded=len(config.adapters))
    engine_class = plugins.load(ENGINE_IMPLEMENTATIONS.get(config.kind, known_kind(config.kind)))
    return engine_class(config)
