"""Health rules for generated or crowdsourced captions: what must not enter a dataset.

DEArt's health check drops captions that are too short, use banned words, or are junk
("aN oLd DrAwInG!!!!"); generated text adds two failure modes of its own: repetition
loops (the mode-collapse symptom) and, in formal analyses, naming the catalogued title or
creator (the model recognised the work and recites instead of looking). `check_text`
returns one Flag per broken rule; `rule` is a stable code a stage can reject with.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from factory.text.normalise import deaccent, fold, plain_quotes, words

TOO_SHORT = "too_short"
BANNED_WORD = "banned_word"
JUNK = "junk"
TOO_LONG = "too_long"
REPETITION = "repetition"
TITLE_LEAK = "title_leak"
CREATOR_LEAK = "creator_leak"


class HealthRules(BaseModel):
    """Thresholds and word lists of the health check; defaults follow DEArt's."""

    model_config = ConfigDict(extra="forbid")

    min_tokens: int = Field(2, ge=0, description="fewer word tokens than this is too short")
    banned_words: list[str] = Field(
        default_factory=lambda: [
            "bad example",
            "lorem ipsum",
            "n/a",
            "asdf",
            "qwerty",
            "blah",
            "tbd",
            "todo",
            "xxx",
            "placeholder",
            "idk",
            "dunno",
        ],
        description="annotator junk and placeholders; whole words, case-insensitive",
    )
    banned_phrases: list[str] = Field(
        default_factory=lambda: [
            "as an ai",
            "language model",
            "i'm sorry",
            "i cannot",
            "i can't",
            "i am unable",
            "unable to view",
            "cannot see the image",
            "here is a caption",
            "let me know",
        ],
        description="assistant talk that leaked into the text; whole words, case-insensitive",
    )
    max_chars: dict[str, int] = Field(
        default_factory=lambda: {"objective": 250},
        description="longest text per caption style, in characters; styles not named have no limit",
    )
    junk_alternating_words: int = Field(
        2,
        ge=1,
        description="this many words in alternating case ('oLd', 'aN') make the text junk",
    )
    junk_case_flips: int = Field(
        4, ge=2, description="one word whose case flips this often ('DrAwInG') is junk alone"
    )
    junk_punctuation_run: int = Field(
        4,
        ge=2,
        description="this many of one punctuation mark in a row ('....', '----'), or of "
        "'!' and '?' mixed ('?!?!'), is junk",
    )
    junk_letter_run: int = Field(
        5, ge=3, description="one letter this many times in a row ('soooooo') is junk"
    )
    junk_min_letter_fraction: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="fewer letters than this share of the non-space characters is junk "
        "(low, so that 'Plate 12, fig. 3-4, 1887' passes)",
    )
    repeat_max_ngram: int = Field(
        10, ge=1, description="longest phrase, in words, checked for back-to-back repeats"
    )
    repeat_min_run: int = Field(
        3,
        ge=2,
        description="a phrase said this many times back to back is a repetition loop "
        "('the horse the horse the horse')",
    )
    repeat_sentence_count: int = Field(
        3, ge=2, description="a sentence said this many times anywhere is a repetition loop"
    )
    repeat_window: int = Field(
        50, ge=10, description="words per window for the vocabulary-collapse check"
    )
    repeat_min_unique_ratio: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="a window of `repeat_window` words with fewer distinct words than this "
        "share is a repetition loop (natural prose stays above 0.6)",
    )
    check_leaks: bool = Field(True, description="flag title and creator names in leak_styles")
    leak_styles: list[str] = Field(
        default_factory=lambda: ["formal_analysis"],
        description="styles that must not name the catalogued title or creator",
    )
    leak_min_name_chars: int = Field(
        4,
        ge=1,
        description="shorter parts of a creator's name ('Li', 'Ey') are not matched alone",
    )


@dataclass(frozen=True)
class Flag:
    """One broken rule: a stable `rule` code and a human-readable `detail`."""

    rule: str
    detail: str


def check_text(
    text: str,
    style: str,
    rules: HealthRules,
    title: str | None = None,
    creator: str | None = None,
) -> list[Flag]:
    """Every health rule `text` (a caption of `style`) breaks; empty when it is healthy."""
    flags = [*_too_short(text, rules), *_banned(text, rules), *_junk(text, rules)]
    limit = rules.max_chars.get(style)
    if limit is not None and len(text.strip()) > limit:
        flags.append(Flag(TOO_LONG, f"{len(text.strip())} characters, more than {limit}"))
    flags.extend(_repetition(text, rules))
    if rules.check_leaks and style in rules.leak_styles:
        flags.extend(_title_leak(text, title))
        flags.extend(_creator_leak(text, creator, rules.leak_min_name_chars))
    return flags


def _too_short(text: str, rules: HealthRules) -> Iterator[Flag]:
    count = len(words(text))
    if count < rules.min_tokens:
        yield Flag(TOO_SHORT, f"{count} tokens, fewer than {rules.min_tokens}")


def _whole(phrase: str) -> re.Pattern:
    # \b fails next to "/" or "'" at a phrase's edge; look for non-word neighbours instead
    return re.compile(rf"(?<!\w){re.escape(fold(phrase))}(?!\w)")


def _banned(text: str, rules: HealthRules) -> Iterator[Flag]:
    folded = fold(plain_quotes(text))
    for phrase in [*rules.banned_words, *rules.banned_phrases]:
        if phrase.strip() and _whole(phrase.strip()).search(folded):
            yield Flag(BANNED_WORD, f"contains {phrase!r}")


# ---------------------------------------------------------------------------- junk


def _case_flips(word: str) -> int:
    letters = [char for char in word if char.isalpha()]
    # a capital first letter before lower case is ordinary capitalisation, not a flip
    if len(letters) > 1 and letters[0].isupper() and letters[1].islower():
        letters = letters[1:]
    return sum(a.isupper() != b.isupper() for a, b in zip(letters, letters[1:], strict=False))


def _alternating(word: str) -> bool:
    """'oLd', 'aN', 'DrAwInG'; not 'McDonald', 'iPhone', 'DEArt' or 'Inconsistent'."""
    letters = [char for char in word if char.isalpha()]
    if len(letters) > 1 and letters[0].isupper() and letters[1].islower():
        letters = letters[1:]
    flips = _case_flips(word)
    return len(letters) >= 2 and flips >= 1 and flips / (len(letters) - 1) >= 0.5


def _junk(text: str, rules: HealthRules) -> Iterator[Flag]:
    tokens = re.findall(r"[^\W\d_]+", text)
    alternating = [token for token in tokens if _alternating(token)]
    wild = [token for token in tokens if _case_flips(token) >= rules.junk_case_flips]
    if len(alternating) >= rules.junk_alternating_words or wild:
        shown = ", ".join(repr(token) for token in (wild or alternating)[:3])
        yield Flag(JUNK, f"alternating case: {shown}")
    run = rules.junk_punctuation_run
    punctuation = re.search(rf"([^\w\s])\1{{{run - 1},}}|[!?]{{{run},}}", text)
    if punctuation:
        yield Flag(JUNK, f"punctuation run {punctuation.group()[:12]!r}")
    letters = re.search(rf"([^\W\d_])\1{{{rules.junk_letter_run - 1},}}", text, re.IGNORECASE)
    if letters:
        yield Flag(JUNK, f"letter run {letters.group()[:12]!r}")
    visible = re.sub(r"\s", "", text)
    share = sum(char.isalpha() for char in visible) / len(visible) if visible else 1.0
    if share < rules.junk_min_letter_fraction:
        yield Flag(JUNK, f"only {share:.0%} of the characters are letters")


# ---------------------------------------------------------------------------- repetition


def _repetition(text: str, rules: HealthRules) -> Iterator[Flag]:
    tokens = words(text)
    if loop := _back_to_back(tokens, rules.repeat_max_ngram, rules.repeat_min_run):
        yield Flag(REPETITION, f"{loop!r} repeated {rules.repeat_min_run}+ times in a row")
        return
    sentences = [" ".join(words(s)) for s in re.split(r"(?<=[.!?;])\s+|\n+", text)]
    counts: dict[str, int] = {}
    for sentence in sentences:
        if sentence:
            counts[sentence] = counts.get(sentence, 0) + 1
    repeated = [s for s, count in counts.items() if count >= rules.repeat_sentence_count]
    if repeated:
        yield Flag(REPETITION, f"sentence {repeated[0]!r} said {counts[repeated[0]]} times")
        return
    size = rules.repeat_window
    for start in range(0, max(len(tokens) - size, 0) + 1, max(size // 2, 1)):
        window = tokens[start : start + size]
        if len(window) == size and len(set(window)) / size < rules.repeat_min_unique_ratio:
            yield Flag(REPETITION, f"only {len(set(window))} distinct words in {size}")
            return


def _back_to_back(tokens: list[str], max_n: int, min_run: int) -> str | None:
    """The first phrase of up to `max_n` words that occurs `min_run` times back to back."""
    for n in range(1, max_n + 1):
        # tokens[j] == tokens[j + n] for n * (min_run - 1) positions in a row means the
        # n words before them repeat min_run times
        streak = 0
        for j in range(len(tokens) - n):
            streak = streak + 1 if tokens[j] == tokens[j + n] else 0
            if streak >= n * (min_run - 1):
                start = j + 1 - streak
                return " ".join(tokens[start : start + n])
    return None


# ---------------------------------------------------------------------------- leaks

_ARTICLES = {"the", "a", "an", "le", "la", "les", "l", "il", "lo", "gli", "el", "los", "las"}
_ARTICLES |= {"de", "het", "een", "der", "die", "das", "un", "une", "uno", "una"}
_STOPWORDS = {"of", "and", "in", "on", "at", "with", "for", "to", "by", "from", "or", "no"}
# Titles made only of these say what the picture shows, so an analysis may use them.
_GENERIC_TITLE = {
    "untitled",
    "portrait",
    "self",
    "landscape",
    "still",
    "life",
    "study",
    "studies",
    "sketch",
    "figure",
    "figures",
    "composition",
    "head",
    "bust",
    "woman",
    "women",
    "man",
    "men",
    "girl",
    "boy",
    "child",
    "lady",
    "nude",
    "scene",
    "view",
    "interior",
    "seascape",
    "flowers",
    "abstract",
    "painting",
    "drawing",
    "print",
    "photograph",
    "design",
    "fragment",
    "panel",
    "plate",
    "page",
    "number",
    "vase",
    "bowl",
    "jar",
    "cup",
}
# Parts of a creator field that are not a name: roles, attributions, particles.
_NOT_A_NAME = (
    _ARTICLES
    | _STOPWORDS
    | {
        "van",
        "von",
        "da",
        "di",
        "del",
        "della",
        "dei",
        "den",
        "du",
        "des",
        "ten",
        "ter",
        "y",
        "unknown",
        "anonymous",
        "unidentified",
        "workshop",
        "studio",
        "circle",
        "follower",
        "followers",
        "school",
        "attributed",
        "after",
        "manner",
        "style",
        "master",
        "artist",
        "maker",
        "possibly",
        "probably",
        "various",
        "active",
        "born",
        "died",
        "century",
    }
)


def _phrase_in(phrase: list[str], tokens: list[str]) -> bool:
    n = len(phrase)
    return any(tokens[i : i + n] == phrase for i in range(len(tokens) - n + 1))


def _title_parts(title: str) -> list[str]:
    bracketed = re.findall(r"[(\[]([^)\]]*)[)\]]", title)
    main = re.sub(r"[(\[][^)\]]*[)\]]", " ", title)
    return [main, main.split(":")[0], *bracketed]


def _title_leak(text: str, title: str | None) -> Iterator[Flag]:
    if not title or not title.strip():
        return
    tokens = words(text)
    for part in _title_parts(title):
        phrase = words(part)
        while phrase and phrase[0] in _ARTICLES:
            phrase = phrase[1:]
        ignored = _ARTICLES | _STOPWORDS | _GENERIC_TITLE
        # a title of generic words or numbers ("Study No. 5") names nothing to leak
        distinctive = [w for w in phrase if w not in ignored and not w.isdigit()]
        if not distinctive or len(" ".join(phrase)) < 4:
            continue
        if len(phrase) == 1:
            # a one-word title counts only as a name: "Guernica", not "the sunflowers"
            if _capitalised(text, phrase[0]):
                yield Flag(TITLE_LEAK, f"names the title {title!r}")
                return
        elif _phrase_in(phrase, tokens):
            yield Flag(TITLE_LEAK, f"names the title {title!r}")
            return


def _capitalised(text: str, name: str) -> bool:
    """`name` written as a name (capitalised, diacritics ignored), not inside a hyphenated
    compound: "Rose's brushwork" names Rose; "rose-coloured", "a red rose" and
    "Rose-tinted light" do not."""
    name = deaccent(name)
    if name.isupper() or name.islower():  # catalogues write "MONET" or "monet" too
        name = name.capitalize()
    return bool(re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", deaccent(text)))


def _creator_leak(text: str, creator: str | None, min_chars: int) -> Iterator[Flag]:
    if not creator or not creator.strip():
        return
    name = re.sub(r"[(\[][^)\]]*[)\]]|\d+", " ", creator)
    parts = words(name)
    if len([p for p in parts if p not in _NOT_A_NAME]) >= 2 and _phrase_in(parts, words(text)):
        yield Flag(CREATOR_LEAK, f"names the creator {creator.strip()!r}")
        return
    for part in re.findall(r"[^\W\d_]+", name):
        if len(part) < min_chars or fold(part) in _NOT_A_NAME:
            continue
        if _capitalised(text, part):
            yield Flag(CREATOR_LEAK, f"names the creator {creator.strip()!r} ({part!r})")
            return
