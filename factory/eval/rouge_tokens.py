"""rouge-score's own tokeniser with the Porter stems and whole texts memoised.

rouge-score stems every word of the prediction again for each reference (score_multi
scores the pairs one by one), and NLTK's Porter stemmer is pure Python: on 5,000 images
that is most of the light metrics' time. Same tokens, computed once per word and text.
"""

from __future__ import annotations

import functools


class _MemoStemmer:
    def __init__(self):
        from nltk.stem import porter

        self.stem = functools.lru_cache(maxsize=65536)(porter.PorterStemmer().stem)


class MemoRougeTokenizer:
    """Drop-in `tokenizer=` for rouge_score.RougeScorer, same output as DefaultTokenizer."""

    def __init__(self, use_stemmer: bool):
        self._stemmer = _MemoStemmer() if use_stemmer else None
        self._texts: dict[str, tuple[str, ...]] = {}

    def tokenize(self, text: str) -> list[str]:
        from rouge_score import tokenize

        if text not in self._texts:
            self._texts[text] = tuple(tokenize.tokenize(text, self._stemmer))
        return list(self._texts[text])
