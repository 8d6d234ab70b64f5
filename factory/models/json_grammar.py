"""JSON-schema-constrained decoding for the transformers engine, through xgrammar.

xgrammar is vLLM's own structured-output backend; its Hugging Face logits processor masks,
at every step, the tokens that would leave the schema. Whitespace between JSON tokens is
not allowed (one compact line): a model with nothing to say cannot pad the reply with
blank lines until it runs out of tokens, and the schema's maxLength / maxItems then bound
the whole reply.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from typing import Any


def schema_key(schema: dict[str, Any] | None) -> str:
    """One key per distinct schema (key order ignored); "" for no schema."""
    return "" if schema is None else json.dumps(schema, sort_keys=True)


class JsonGrammars:
    """Compiles each schema once per tokenizer, and builds a fresh logits processor per
    generate call (xgrammar's processor keeps per-call matcher state)."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int]):
        self.tokenizer, self.vocab_size, self.stop_token_ids = tokenizer, vocab_size, stop_token_ids
        self._compiler: Any = None
        self._compiled: dict[str, Any] = {}
        self._lock = threading.Lock()

    @staticmethod
    def available() -> bool:
        return importlib.util.find_spec("xgrammar") is not None

    def processor(self, schema: dict[str, Any]) -> Any:
        from xgrammar.contrib.hf import LogitsProcessor

        return LogitsProcessor(self.compiled(schema))

    def compiled(self, schema: dict[str, Any]) -> Any:
        key = schema_key(schema)
        with self._lock:
            if key not in self._compiled:
                self._compiled[key] = self._compiler_for().compile_json_schema(
                    key, any_whitespace=False, strict_mode=True
                )
            return self._compiled[key]

    def _compiler_for(self) -> Any:
        if self._compiler is None:
            if not self.available():
                raise RuntimeError(
                    "a request asks for JSON under a schema, and constrained decoding on the "
                    "transformers engine needs xgrammar: pip install 'caption-factory[models]'"
                )
            import xgrammar

            info = xgrammar.TokenizerInfo.from_huggingface(
                self.tokenizer, vocab_size=self.vocab_size, stop_token_ids=self.stop_token_ids
            )
            self._compiler = xgrammar.GrammarCompiler(info)
        return self._compiler
