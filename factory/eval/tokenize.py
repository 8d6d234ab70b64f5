"""PTB tokenisation as the COCO caption evaluation does it, with or without Java.

pycocoevalcap runs Stanford's PTBTokenizer (Java) with `-preserveLines -lowerCase` and then
drops punctuation tokens. `python_ptb_tokens` reproduces that for the English a caption holds
(contractions, abbreviations, numbers, brackets, quotes, dashes), so the light metrics run
where no JVM is; tests check it against the Java tokenizer token for token. Quirk kept on
purpose: pycocoevalcap's punctuation list is upper-case ("-LRB-") while the tokens are
lower-cased ("-lrb-"), so bracket tokens survive into the scores, exactly as in COCO numbers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

Tokenizer = Literal["ptb-java", "ptb-python"]

# pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS, lower-cased tokens compared verbatim
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-"]
    + [".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

_UNICODE = {
    "\u2014": " -- ",  # em dash
    "\u2013": " -- ",  # en dash
    "\u2026": " ... ",
    "\u201c": ' " ',
    "\u201d": ' " ',
    "\u2018": " ` ",
    "\u2019": "'",
    "\u00a0": " ",
}
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
# words PTB splits in two although no apostrophe marks it
_SPLIT_WORDS = {
    "cannot": ["can", "not"],
    "gonna": ["gon", "na"],
    "gotta": ["got", "ta"],
    "wanna": ["wan", "na"],
    "lemme": ["lem", "me"],
}
_NEGATIONS = {"can't": ["ca", "n't"], "won't": ["wo", "n't"], "ain't": ["ai", "n't"]}
_CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ve|'d|'ll|'m)$")
# One token each: letter-period abbreviations (u.s.a., p.m., e.g., c.), words with inner
# hyphens, periods, slashes, apostrophes or digits (oil-on-canvas, horses.the, 1/2,
# 10:30, 1,000), runs of sentence punctuation (?!, ...), and any other single symbol.
_TOKEN = re.compile(
    r"""
    (?:[a-z]\.)+(?=[\s"')\]}]|$)             # abbreviations of single letters
  | [#@]?[\w&](?:[\w&'/]|[.,:](?=\w)|-(?=\w))*(?:\.(?!\.))?  # words and numbers
  | \.{2,} | -{2,} | [?!]+ | ``|''
  | \S
    """,
    re.VERBOSE,
)
# period-final abbreviations that keep their period inside a sentence
_ABBREVIATIONS = frozenset(
    ("mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "gen", "col", "capt", "lt", "sgt")
    + ("rev", "hon", "fr", "vs", "etc", "inc", "ltd", "co", "corp", "ca", "fl", "no", "vol")
    + ("jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec")
    + ("ed", "eds", "fig", "figs")
)


def java_available() -> bool:
    return shutil.which("java") is not None


def python_ptb_tokens(text: str) -> list[str]:
    """The tokens pycocoevalcap's PTB tokenisation keeps for one caption."""
    text = text.replace("\n", " ")
    for char, replacement in _UNICODE.items():
        text = text.replace(char, replacement)
    tokens: list[str] = []
    words = _TOKEN.findall(text.lower())
    for index, word in enumerate(words):
        tokens.extend(_split_word(word, last=index == len(words) - 1))
    return [token for token in tokens if token not in PUNCTUATIONS]


def _split_word(word: str, last: bool) -> list[str]:
    if word in _BRACKETS:
        return [_BRACKETS[word]]
    if word == '"':
        return ["''"]
    if word in _SPLIT_WORDS:
        return _SPLIT_WORDS[word]
    if word in _NEGATIONS:
        return _NEGATIONS[word]
    if word.endswith("'") and len(word) > 1:  # a closing quote or plural possessive
        return [*_split_word(word[:-1], last), "'"]
    if word.startswith("'") and len(word) > 1 and not _CLITIC.match(word):
        return ["'", *_split_word(word[1:], last)]
    if match := _CLITIC.match(word):
        return [*_split_word(match.group(1), last), match.group(2)]
    if word.endswith(".") and re.search(r"\w\.$", word) and not _keeps_period(word, last):
        return [word[:-1], "."]
    if re.fullmatch(r"[\w&]+[=+*~<>^|][\w&]+", word):
        return re.split(r"([=+*~<>^|])", word)
    return [word]


def _keeps_period(word: str, last: bool) -> bool:
    if re.fullmatch(r"(?:[a-z]\.)+", word):  # c., p.m., u.s.a. (also at the end of a line)
        return True
    return not last and word[:-1] in _ABBREVIATIONS


def java_ptb_tokens(captions: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Stanford PTBTokenizer (the CoreNLP 3.4.1 jar pycocoevalcap ships) on a JVM.

    The command line and the punctuation filter are pycocoevalcap's; run here instead of
    through its wrapper because that one writes its input file into the installed package
    (fails where site-packages is read-only) and ignores the JVM's exit status (a broken
    Java turns into silently missing captions).
    """
    from pycocoevalcap.tokenizer import ptbtokenizer

    jar = Path(ptbtokenizer.__file__).with_name(ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR)
    keys = [key for key, texts in captions.items() for _ in texts]
    lines = "\n".join(text.replace("\n", " ") for texts in captions.values() for text in texts)
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "captions.txt"
        source.write_text(lines, encoding="utf-8")
        command = ["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer"]
        command += ["-preserveLines", "-lowerCase", str(source)]
        done = subprocess.run(command, capture_output=True, check=False)
    output = done.stdout.decode("utf-8").split("\n")
    if done.returncode != 0 or len(output) < len(keys):
        detail = done.stderr.decode("utf-8", "replace").strip()[-300:]
        raise RuntimeError(f"Stanford PTBTokenizer (java) failed ({done.returncode}): {detail}")
    tokens: dict[str, list[str]] = {key: [] for key in captions}
    for key, line in zip(keys, output, strict=False):
        kept = [word for word in line.rstrip().split(" ") if word not in PUNCTUATIONS]
        tokens[key].append(" ".join(kept))
    return tokens


def tokenize_captions(
    captions: Mapping[str, Sequence[str]], tokenizer: Tokenizer
) -> dict[str, list[str]]:
    """{key: [space-joined tokens per caption]}, the input pycocoevalcap's scorers take."""
    if tokenizer == "ptb-java":
        return java_ptb_tokens(captions)
    return {
        key: [" ".join(python_ptb_tokens(text)) for text in texts]
        for key, texts in captions.items()
    }
