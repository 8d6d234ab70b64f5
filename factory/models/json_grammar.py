"""JSON-schema-constrained decoding for the transformers engine, through xgrammar.

xgrammar is vLLM's own structured-output backend; at every step its matchers mask the
tokens that would leave the schema. Whitespace between JSON tokens is not allowed (one
compact line): a model with nothing to say cannot pad the reply with blank lines until it
runs out of tokens, and the schema's maxLength / maxItems then bound the whole reply.

Most tokens of a reply fall inside its free text, and there the grammar has nothing to
decide, so the processor (ours, not `xgrammar.contrib.hf.LogitsProcessor`) spends as
little per token as it can there (benchmarks/RESULTS.md §10):
- A shared string limit is kept beside the grammar, not in it (json_string_bound.py):
  inside a bounded string xgrammar's matcher costs 20x more per token.
- Inside a free string the mask does not change from token to token while the tokens are
  plain text, so a row there keeps its mask and holds its tokens back from the matcher,
  which takes them as one string when a token that may end the string or open an escape
  comes. A "free" string is one whose mask allows every plain token and the closing
  quote: keys and enum values never do, and a string before its minLength does not.
- Rows are advanced and masked in batched calls, the sampled tokens read with one device
  copy per step.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import threading
from typing import Any

from factory.models.json_string_bound import StringCounter, TokenChars, hoist_string_bound


def schema_key(schema: dict[str, Any] | None) -> str:
    """One key per distinct schema (key order ignored); "" for no schema."""
    return "" if schema is None else json.dumps(schema, sort_keys=True)


class JsonGrammars:
    """Compiles each schema once per tokenizer, and builds a fresh logits processor per
    generate call (the processor keeps per-call matcher state)."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int]):
        self.tokenizer, self.vocab_size, self.stop_token_ids = tokenizer, vocab_size, stop_token_ids
        self._compiler: Any = None
        self._vocabulary: Vocabulary | None = None
        self._compiled: dict[str, tuple[Any, int | None]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def available() -> bool:
        return importlib.util.find_spec("xgrammar") is not None

    def processor(self, schema: dict[str, Any]) -> JsonLogitsProcessor:
        compiled, bound = self.compiled(schema)
        assert self._vocabulary is not None  # built with the compiler
        return JsonLogitsProcessor(compiled, bound, self._vocabulary)

    def compiled(self, schema: dict[str, Any]) -> tuple[Any, int | None]:
        """The grammar (without a shared string limit) and that limit, or None."""
        key = schema_key(schema)
        with self._lock:
            if key not in self._compiled:
                grammar_schema, bound = hoist_string_bound(schema)
                grammar = self._compiler_for().compile_json_schema(
                    schema_key(grammar_schema), any_whitespace=False, strict_mode=True
                )
                self._compiled[key] = grammar, bound
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
            self._vocabulary = Vocabulary(self._compiler, info)
        return self._compiler


class Vocabulary:
    """What the processor knows of each token: its characters inside a string, and whether
    it is plain text, which a free string takes without changing its mask."""

    def __init__(self, compiler: Any, info: Any):
        import torch
        import xgrammar

        self.chars = TokenChars(info.decoded_vocab)
        # the same counts over the model's whole vocabulary, for the limit's mask (columns
        # past the tokenizer's own tokens are padding, which the grammar masks anyway)
        counts = self.chars.chars[: info.vocab_size]
        self.char_counts = torch.tensor(
            counts + [0] * (info.vocab_size - len(counts)), dtype=torch.int32
        )
        # the tokens xgrammar itself allows inside a JSON string, one character in
        string = xgrammar.GrammarMatcher(compiler.compile_json_schema('{"type": "string"}'))
        inside = xgrammar.allocate_token_bitmask(1, info.vocab_size)
        string.accept_string('"a')
        string.fill_next_token_bitmask(inside)
        allowed = _unpack(inside[0], info.vocab_size).tolist()
        self.plain = [
            bool(allowed[token]) and _plain_text(raw)
            for token, raw in enumerate(info.decoded_vocab)
        ]
        quote = next((t for t, raw in enumerate(info.decoded_vocab) if raw == b'"'), None)
        # a mask allowing every plain token and the lone closing quote is a free string's
        free = self.plain + [False] * (inside.shape[1] * 32 - len(self.plain))
        if quote is None or not any(self.plain):
            self.free_mask = None  # no way to tell a free string: every step fills its mask
        else:
            free[quote] = True
            self.free_mask = _pack(free)


def _plain_text(raw: bytes) -> bool:
    """Whole UTF-8 characters with no quote, backslash or control character."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False  # part of a character: the next token must finish it
    return bool(text) and not any(char in '"\\' or ord(char) < 0x20 for char in text)


def _unpack(words: Any, size: int) -> Any:
    """One bitmask row (int32 words, token i at bit i % 32 of word i // 32) as a bool
    numpy array of `size` tokens."""
    import numpy

    bits = numpy.unpackbits(words.numpy().view(numpy.uint8), bitorder="little")
    return bits[:size].astype(bool)


def _pack(bits: list[bool]) -> Any:
    """The inverse of `_unpack`: a torch int32 bitmask row (len(bits) a multiple of 32)."""
    import numpy
    import torch

    packed = numpy.packbits(numpy.array(bits, dtype=bool), bitorder="little")
    return torch.from_numpy(packed.view(numpy.int32).copy())


class JsonLogitsProcessor:
    """One generate call's logits processor: per row, a grammar matcher, a string counter
    (for a schema with a shared string limit), and the plain tokens of a free string that
    the matcher has not taken yet."""

    def __init__(self, compiled: Any, bound: int | None, vocabulary: Vocabulary):
        self.compiled, self.bound, self.vocabulary = compiled, bound, vocabulary
        # a free string is known only when its limit is not in the grammar (a bounded
        # repetition changes the mask with every character)
        self.free_mask = vocabulary.free_mask if bound is not None else None
        self.stop_tokens = set(compiled.tokenizer_info.stop_token_ids)
        self.matchers: list[Any] = []
        self.counters: list[StringCounter] = []
        self.held: list[list[int]] = []  # per row: plain tokens the matcher has not taken
        self.in_free_string: list[bool] = []
        self.active: list[int] = []  # rows whose JSON is not finished
        self.batch: Any = None
        self.bitmask: Any = None
        self.blocked: Any = None  # the bitmask unpacked (True: not allowed), on the CPU
        self.chars: Any = None  # each token's string characters, on the scores' device

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import xgrammar

        if self.batch is None:
            self._start(input_ids.shape[0], scores)
            changed = self.active
        else:
            changed = self._accept(input_ids[:, -1].tolist())
        if not self.active:
            return scores
        if changed:
            matchers = [self.matchers[row] for row in changed]
            self.batch.batch_fill_next_token_bitmask(matchers, self.bitmask, changed)
            self._find_free_strings(changed)
        if scores.device.type == "cuda":
            xgrammar.apply_token_bitmask_inplace(
                scores, self.bitmask.to(scores.device), indices=self.active
            )
        else:
            scores = self._mask_on_cpu(scores, changed)
        for row in self.active if self.counters else ():
            room = self.counters[row].room()
            if room is not None:
                scores[row].masked_fill_(self.chars > room, float("-inf"))
        return scores

    # transformers reads every processor's signature at every step
    # (LogitsProcessorList.__call__); a signature set once makes that an attribute read
    __call__.__signature__ = inspect.signature(__call__)  # type: ignore[attr-defined]

    def _mask_on_cpu(self, scores: Any, changed: list[int]) -> Any:
        """Keeps each row's mask unpacked and unpacks only the rows whose mask changed: on
        the CPU one masked fill over the batch costs less than xgrammar's kernel call."""
        import torch

        if self.blocked is None:
            self.blocked = torch.zeros(scores.shape, dtype=torch.bool)
        rows = self.blocked.numpy()  # the same memory
        for row in changed:
            rows[row] = ~_unpack(self.bitmask[row], scores.shape[-1])
        blocked = self.blocked.to(scores.device)
        return scores.masked_fill_(blocked, float("-inf"))

    def _start(self, rows: int, scores: Any) -> None:
        import xgrammar

        # one thread: the forward pass already has the cores, and a pool's hand-offs cost
        # more than 8 rows' masks
        self.batch = xgrammar.BatchGrammarMatcher(max_threads=1)
        self.matchers = [xgrammar.GrammarMatcher(self.compiled) for _ in range(rows)]
        self.active = list(range(rows))
        self.held = [[] for _ in range(rows)]
        self.in_free_string = [False] * rows
        self.bitmask = xgrammar.allocate_token_bitmask(
            rows, self.compiled.tokenizer_info.vocab_size
        )
        if self.bound is not None:
            table = self.vocabulary.chars
            self.counters = [StringCounter(table, self.bound) for _ in range(rows)]
            self.chars = self.vocabulary.char_counts.to(scores.device)

    def _accept(self, tokens: list[int]) -> list[int]:
        """Advances every active row by its sampled token; returns the rows whose mask
        may have changed."""
        changed = []
        plain, held, in_free_string = self.vocabulary.plain, self.held, self.in_free_string
        for row in self.active:
            token = tokens[row]
            if self.counters:
                self.counters[row].advance(token)
            if in_free_string[row]:
                if plain[token]:
                    held[row].append(token)
                    continue
                self._release(row)
            changed.append(row)
        if not changed:
            return changed
        matchers = [self.matchers[row] for row in changed]
        accepted = self.batch.batch_accept_token(matchers, [tokens[row] for row in changed])
        if not all(accepted):
            row = changed[accepted.index(False)]
            raise RuntimeError(f"token {tokens[row]} was sampled outside the JSON grammar")
        # a matcher ends only by accepting a stop token
        ended = {row for row in changed if tokens[row] in self.stop_tokens}
        ended = {row for row in ended if self.matchers[row].is_terminated()}
        if ended:
            self.active = [row for row in self.active if row not in ended]
            changed = [row for row in changed if row not in ended]
        return changed

    def _release(self, row: int) -> None:
        """The held tokens go to the matcher as one string; the row leaves its string's
        steady state."""
        raw = b"".join(self.vocabulary.chars.token_bytes[token] for token in self.held[row])
        if raw and not self.matchers[row].accept_string(raw):
            raise RuntimeError("plain text was refused inside a free JSON string")
        self.held[row].clear()
        self.in_free_string[row] = False

    def _find_free_strings(self, rows: list[int]) -> None:
        import torch

        if self.free_mask is None:
            return
        for row in rows:  # rows one by one: a step changes the masks of one or two
            if self.counters[row].between_characters():
                words = self.bitmask[row] & self.free_mask
                self.in_free_string[row] = torch.equal(words, self.free_mask)
