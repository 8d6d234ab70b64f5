"""Object hallucination (CHAIR-style) and coverage (CompreCap-style) against the experts.

A caption's objects are the phrases of an object vocabulary (the tag vocabulary, minus its
material and technique sections) and their synonyms, matched longest first. The experts'
objects are the image's CLIP tags and detector boxes above a score. Then, over captions:
- CHAIR_i = mentioned objects the experts did not see / mentioned objects;
- CHAIR_s = captions with at least one such object / captions;
- coverage = expert objects the caption mentions / expert objects.
Images without any expert object cannot be judged and are only counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, Field

from factory import vocab
from factory.text.normalise import words

DEFAULT_SYNONYMS = "object_synonyms.yaml"


class HallucinationConfig(BaseModel):
    """Which words count as objects and which expert outputs support them."""

    vocabulary: str = Field(
        vocab.ART_CONCEPTS,
        description="object vocabulary: a shipped list name or a local file, one label a line",
    )
    exclude_sections: list[str] = Field(
        ["materials", "techniques and visual form"],
        description="'# section' headings of the vocabulary whose labels are not objects",
    )
    synonyms: str | None = Field(
        None,
        description="YAML {canonical: [forms]} of extra surface forms; None: the shipped map",
    )
    min_tag_score: float = Field(0.0, ge=0, description="CLIP tags below this support nothing")
    min_object_score: float = Field(0.0, ge=0, description="boxes below this support nothing")


@dataclass(frozen=True)
class ObjectLexicon:
    """Word sequence -> canonical object, matched longest first."""

    forms: dict[tuple[str, ...], str]
    longest: int

    def canonical(self, label: str) -> str:
        key = tuple(words(label))
        return self.forms.get(key, " ".join(key))

    def mentions(self, text: str) -> list[str]:
        """Canonical objects a text mentions, each once, in order of first mention."""
        tokens, found, index = words(text or ""), [], 0
        while index < len(tokens):
            for size in range(min(self.longest, len(tokens) - index), 0, -1):
                name = self.forms.get(tuple(tokens[index : index + size]))
                if name:
                    if name not in found:
                        found.append(name)
                    index += size
                    break
            else:
                index += 1
        return found


def build_lexicon(config: HallucinationConfig) -> ObjectLexicon:
    forms: dict[tuple[str, ...], str] = {}
    for label in _vocabulary_labels(config):
        _add(forms, label, " ".join(words(label)))
    for canonical, aliases in _synonyms(config.synonyms).items():
        name = " ".join(words(canonical))
        _add(forms, canonical, name)
        for alias in aliases or []:
            _add(forms, alias, name)
    return ObjectLexicon(forms, max((len(key) for key in forms), default=1))


def _add(forms: dict[tuple[str, ...], str], phrase: str, canonical: str) -> None:
    key = tuple(words(phrase))
    if not key:
        return
    forms[key] = canonical
    for plural in _plurals(key[-1]):
        forms.setdefault((*key[:-1], plural), canonical)


def _plurals(word: str) -> list[str]:
    if word.endswith(("s", "x", "ch", "sh")):
        return [word + "es"]
    if word.endswith("y") and len(word) > 2 and word[-2] not in "aeiou":
        return [word[:-1] + "ies"]
    return [word + "s"]


def _vocabulary_labels(config: HallucinationConfig) -> list[str]:
    text = _read_list(config.vocabulary)
    excluded = {name.casefold() for name in config.exclude_sections}
    labels, skipping = [], False
    for line in text.splitlines():
        line = " ".join(line.split())
        if line.startswith("#"):
            skipping = line.lstrip("# ").casefold() in excluded
        elif line and not skipping:
            labels.append(line)
    return labels


def _read_list(name_or_path: str) -> str:
    if name_or_path in vocab.shipped():
        return resources.files(vocab).joinpath(f"{name_or_path}.txt").read_text("utf-8")
    return Path(name_or_path).read_text("utf-8")


def _synonyms(path: str | None) -> dict[str, list[str]]:
    if path is None:
        text = resources.files(__package__).joinpath(DEFAULT_SYNONYMS).read_text("utf-8")
    else:
        text = Path(path).read_text("utf-8")
    loaded = yaml.safe_load(text) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"synonym map {path or DEFAULT_SYNONYMS!r} must be a YAML mapping")
    return loaded


def expert_objects(
    tags: Iterable[Mapping] | None,
    objects: Iterable[Mapping] | None,
    lexicon: ObjectLexicon,
    config: HallucinationConfig,
) -> set[str]:
    """Canonical objects the tagger and the detector saw in one image."""
    seen = {
        lexicon.canonical(tag["label"])
        for tag in tags or []
        if (tag.get("score") or 0.0) >= config.min_tag_score
    }
    seen |= {
        lexicon.canonical(box["label"])
        for box in objects or []
        if (box.get("score") or 0.0) >= config.min_object_score
    }
    return seen


@dataclass
class HallucinationTally:
    """Counts summed over batches of captions; `result` turns them into the ratios."""

    captions: int = 0
    judged: int = 0
    mentioned: int = 0
    hallucinated: int = 0
    flagged: int = 0
    covered: int = 0
    expected: int = 0
    unsupported: Counter = field(default_factory=Counter)

    def add(
        self, captions: Mapping[str, str], experts: Mapping[str, set[str]], lexicon: ObjectLexicon
    ) -> None:
        self.captions += len(captions)
        for key, caption in captions.items():
            seen = experts.get(key) or set()
            if not seen or not caption:
                continue  # nothing to judge against, or nothing said
            names = set(lexicon.mentions(caption))
            invented = names - seen
            self.judged += 1
            self.mentioned += len(names)
            self.hallucinated += len(invented)
            self.flagged += bool(invented)
            self.covered += len(names & seen)
            self.expected += len(seen)
            self.unsupported.update(invented)

    def result(self) -> dict:
        return {
            "captions": self.captions,
            "judged": self.judged,
            "chair_i": self.hallucinated / self.mentioned if self.mentioned else None,
            "chair_s": self.flagged / self.judged if self.judged else None,
            "coverage": self.covered / self.expected if self.expected else None,
            "mentions": self.mentioned,
            "unsupported_objects": dict(self.unsupported.most_common(20)),
        }


def hallucination_scores(
    captions: Mapping[str, str], experts: Mapping[str, set[str]], lexicon: ObjectLexicon
) -> dict:
    """CHAIR_i, CHAIR_s and coverage over the captions whose image has expert objects."""
    tally = HallucinationTally()
    tally.add(captions, experts, lexicon)
    return tally.result()
