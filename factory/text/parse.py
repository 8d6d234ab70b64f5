"""Typed values from what models reply: lists, questions, facts, verdicts, QA pairs, captions.

Models wrap the asked-for format in chatter ("Sure! Here are..."), number lists every way
there is, bold or bracket their labels, fence JSON in code blocks or break it. Each parser
accepts the format its prompt asks for plus those deviations, and raises ParseError (a
short `reason` code and a `detail` with a snippet of the reply) when nothing usable is
left, so a stage can reject the record with the same reason and detail.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from factory.text.labels import match_label
from factory.text.lenient_json import find_json, find_json_spans
from factory.text.normalise import fold, prepare, snippet, strip_inline_markdown

CONSISTENT = "consistent"
INCONSISTENT = "inconsistent"
UNVERIFIABLE = "unverifiable"
CANNOT_TELL = "cannot tell from the image"


class ParseError(ValueError):
    """A reply with nothing usable: `reason` is a short code, `detail` says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Question:
    dimension: str | None
    question: str


@dataclass(frozen=True)
class Verdict:
    verdict: str
    reason: str
    correction: str | None


@dataclass(frozen=True)
class QAPair:
    category: str
    question: str
    answer: str


# ---------------------------------------------------------------------------- lines

_MARKER = re.compile(
    r"""^(?:
        [-*+\u2022\u00b7\u2023\u25e6\u25aa\u2013\u2014]\s+   # - * + bullets and dashes
      | \(\d{1,3}\)\s*                                      # (1)
      | \[\d{1,3}\]\s*                                      # [1]
      | \d{1,3}(?:\.\s+|[)\]:]\s*)                          # 1.  1)  1]  1:
      | (?:q|question|fact|f|item|step|\#)\s*\d{1,3}\s*[.):\-]?\s+   # Q1: Fact 2. #3
      | [a-z]\)\s+                                          # a)
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_HEADER = re.compile(r"^(?:#{1,6}\s+(?P<hash>.+?)\s*#*|(\*\*|__)(?P<bold>[^*]+?):?\2:?)$")
_RULE = re.compile(r"^(?:[-*_=]\s*){3,}$")
_CHATTER = re.compile(
    r"""^(?:
        (?:sure|certainly|of\ course|okay|ok|absolutely|great|alright|got\ it)\b
      | here(?:'s|\ is|\ are)\b
      | (?:below|following)\ (?:is|are)\b
      | the\ following\b
      | (?:i\ hope|hope\ this|let\ me\ know|feel\ free|please\ note|note:)
      | if\ you\ (?:need|want|have|would|'d)\b
      | is\ there\ anything\b
      | i(?:'ve|\ have)\ (?:listed|broken|split|provided|created|written|generated|kept)\b
      | these\ (?:are|questions|facts|pairs)\b
      | (?:i'm\ sorry|i\ am\ sorry|sorry,|i\ cannot|i\ can't|i\ am\ unable|as\ an\ ai)
      | (?:i'd|i\ would|i'm|i\ am)\ (?:be\ )?happy\ to\b | happy\ to\ help
    )""",
    re.IGNORECASE | re.VERBOSE,
)


@dataclass(frozen=True)
class _Item:
    text: str
    marked: bool  # carried a list marker (number, bullet)
    header: str | None  # the most recent heading above it


def _is_chatter(line: str) -> bool:
    return bool(_CHATTER.match(line))


def _strip_marker(line: str) -> tuple[str, bool]:
    for candidate in (line, strip_inline_markdown(line)):
        if match := _MARKER.match(candidate):
            return candidate[match.end() :].strip(), True
    return line, False


def _items(text: str) -> list[_Item]:
    """List items with their headings; unmarked lines count only when none is marked.

    Among marked items, a short unmarked line ("Spatial layout") heads the items below it.
    """
    items: list[_Item] = []
    header: str | None = None  # the last markdown or "Title:" heading
    loose_header: str | None = None  # that, or a later short unmarked line
    loose: list[str | None] = []  # loose_header of each item
    open_item = False  # a marked item that an unmarked next line may continue
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or _RULE.match(line):
            open_item = False
            continue
        if heading := _HEADER.match(line):
            header = strip_inline_markdown(heading["hash"] or heading["bold"]).rstrip(":")
            loose_header = header
            open_item = False
            continue
        content, marked = _strip_marker(line)
        content = strip_inline_markdown(content)
        if not content:
            continue
        if marked:
            items.append(_Item(content, True, header))
            loose.append(loose_header)
            open_item = True
        elif content.endswith(":") and len(content.split()) <= 8:
            header = loose_header = content.rstrip(":").strip()
            open_item = False
        elif open_item and not _is_chatter(content) and items[-1].text[-1] not in ".?!":
            # a long item wrapped onto the next line; a finished sentence is not continued
            last = items[-1]
            items[-1] = _Item(f"{last.text} {content}", True, last.header)
        else:
            items.append(_Item(content, False, header))
            loose.append(loose_header)
            if len(content.split()) <= 6 and content[-1] not in ".?!":
                loose_header = content
            open_item = False
    if any(item.marked for item in items):
        return [
            _Item(item.text, True, heading)
            for item, heading in zip(items, loose, strict=True)
            if item.marked
        ]
    return [item for item in items if not _is_chatter(item.text)]


def _json_strings(value: Any, keys: Sequence[str]) -> list[str]:
    """String items of a JSON list, of a dict wrapping one, or of dicts naming them."""
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:
            return _json_strings(lists[0], keys)
        if all(isinstance(v, str) for v in value.values()):
            return [v for v in value.values() if v.strip()]
        found = _field(value, keys)
        return [found] if found else []
    if not isinstance(value, list):
        return []
    out = []
    for element in value:
        if isinstance(element, str):
            out.append(element)
        elif isinstance(element, dict):
            text = _field(element, keys)
            if text is None:
                strings = [v for v in element.values() if isinstance(v, str)]
                text = strings[0] if len(strings) == 1 else None
            if text:
                out.append(text)
        elif isinstance(element, (int, float)) and not isinstance(element, bool):
            out.append(str(element))
    return [item.strip() for item in out if item.strip()]


def _field(mapping: dict, keys: Sequence[str]) -> Any:
    folded = {fold(str(key)).strip().replace(" ", "_"): value for key, value in mapping.items()}
    for key in keys:
        if key in folded and folded[key] is not None:
            return folded[key]
    return None


def _json_list(text: str) -> Any:
    """The JSON a list-shaped reply holds: one value, or several in a row (JSON lines).

    Only JSON that fills its lines counts, or JSON after a colon ("Here are the facts:
    [...]"): "[1] First item" is a numbered line, and "The label reads [1887]." a fact.
    """
    values = []
    for value, start, end in find_json_spans(text):
        before = text[:start].rsplit("\n", 1)[-1].strip()
        after = text[end:].split("\n", 1)[0].strip(" \t,;")
        if not before.endswith(":") and (before or after):
            if values:
                break
            continue
        values.append(value)
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _require_text(text: str | None) -> str:
    prepared = prepare(text)
    if not prepared:
        raise ParseError("empty", "the reply is empty")
    return prepared


# ---------------------------------------------------------------------------- items

_ITEM_KEYS = ("text", "item", "fact", "question", "statement", "content", "value")


def parse_items(text: str) -> list[str]:
    """The items of a list-shaped reply (numbered, bulleted, plain lines or JSON)."""
    prepared = _require_text(text)
    value = _json_list(prepared)
    if value is not None:
        items = [strip_inline_markdown(item) for item in _json_strings(value, _ITEM_KEYS)]
    else:
        items = [item.text for item in _items(prepared)]
    if not items:
        raise ParseError("no_items", f"no list items in {snippet(text)}")
    return items


# ---------------------------------------------------------------------------- facts

_FACT_LABEL = re.compile(r"^(?:atomic\s+)?(?:fact|statement|claim)\s*\d*\s*[:.\-]\s*", re.I)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(]?[A-Z0-9])")


def parse_facts(text: str) -> list[str]:
    """Atomic facts, one per item, numbering stripped, empty and repeated ones dropped.

    A reply that ignored the list format and wrote prose is split into sentences.
    """
    prepared = _require_text(text)
    value = _json_list(prepared)
    candidates: list[str] = []
    if value is not None:
        candidates = _json_strings(value, ("fact", "statement", "claim", *_ITEM_KEYS))
    else:
        for item in _items(prepared):
            if item.marked:
                candidates.append(item.text)
            else:
                candidates.extend(_SENTENCE_END.split(item.text))
    facts: list[str] = []
    seen: set[str] = set()
    for candidate in candidates:
        fact = _strip_quotes(_FACT_LABEL.sub("", strip_inline_markdown(candidate)).strip())
        key = " ".join(re.findall(r"\w+", fold(fact)))
        if not key or key in seen or (fact.endswith(":") and len(fact.split()) <= 8):
            continue
        seen.add(key)
        facts.append(fact)
    if not facts:
        raise ParseError("no_facts", f"no facts in {snippet(text)}")
    return facts


# ---------------------------------------------------------------------------- questions

_LEADING_TAG = re.compile(
    r"^[\[(](?P<tag>[^\])]{1,60})[\])]\s*[:.\-\u2013\u2014|]?\s*(?P<rest>.*)$"
)
_LABEL_PREFIX = re.compile(
    r"^(?P<tag>[^:?|\[\]()]{1,60}?)\s*(?::|\s[\-\u2013\u2014|]\s)\s*(?P<rest>.+)$"
)
_QUESTION_WORD = re.compile(
    r"^(?:what|where|who|whom|whose|when|why|how|which|is|are|was|were|does|do|did|can|could"
    r"|would|will|should|has|have)\b",
    re.IGNORECASE,
)
_TRAILING_TAG = re.compile(r"^(?P<rest>.+?)\s*[\[(](?P<tag>[^\])]{1,60})[\])]\.?$")
_QUESTION_KEYS = ("question", "q", "text", "query")
_DIMENSION_KEYS = ("dimension", "dim", "aspect", "category", "tag", "type")


def _tagged(text: str, labels: Sequence[str]) -> tuple[str | None, str, bool]:
    """(label, rest, had_tag): a label written before or after the text, if any."""
    text = text.strip()
    if (match := _LEADING_TAG.match(text)) and match["rest"]:
        return match_label(match["tag"], labels), match["rest"].strip(), True
    if match := _LABEL_PREFIX.match(text):
        label = match_label(match["tag"], labels)
        # an unknown "Colour: what..." prefix is still a tag when a colon sets it off,
        # but "Is the text legible: yes or no?" is a question with a colon in it
        unknown_tag = (
            ":" in text[: match.start("rest")]
            and len(match["tag"].split()) <= 4
            and not _QUESTION_WORD.match(match["tag"])
        )
        if label or unknown_tag:
            return label, match["rest"].strip(), True
    if (match := _TRAILING_TAG.match(text)) and (label := match_label(match["tag"], labels)):
        return label, match["rest"].strip(), True
    return None, text, False


def parse_questions(text: str, dimensions: Sequence[str]) -> list[Question]:
    """Questions with the dimension each was asked along (None when it names none given).

    A dimension may tag the question ("[spatial layout] Where...", "Spatial layout: Where...",
    "Where...? (spatial layout)") or head a group of questions.
    """
    prepared = _require_text(text)
    value = _json_list(prepared)
    if value is not None:
        questions = _json_questions(value, dimensions)
    else:
        questions = list(_line_questions(prepared, dimensions))
    unique: list[Question] = []
    seen: set[str] = set()
    for question in questions:
        key = " ".join(re.findall(r"\w+", fold(question.question)))
        if key and key not in seen:
            seen.add(key)
            unique.append(question)
    if not unique:
        raise ParseError("no_questions", f"no questions in {snippet(text)}")
    return unique


def _json_questions(value: Any, dimensions: Sequence[str]) -> list[Question]:
    if value is None:
        return []
    if isinstance(value, dict):
        by_dimension = {key: v for key, v in value.items() if match_label(key, dimensions)}
        if by_dimension:  # {"spatial layout": ["...", "..."], ...}
            out = []
            for key, asked in by_dimension.items():
                for question in asked if isinstance(asked, list) else [asked]:
                    if isinstance(question, str) and question.strip():
                        out.append(Question(match_label(key, dimensions), question.strip()))
            return out
        lists = [v for v in value.values() if isinstance(v, list)]
        return _json_questions(lists[0], dimensions) if len(lists) == 1 else []
    if not isinstance(value, list):
        return []
    out = []
    for element in value:
        if isinstance(element, str):
            dimension, question, _ = _tagged(strip_inline_markdown(element), dimensions)
            out.append(Question(dimension, question))
        elif isinstance(element, dict):
            question = _field(element, _QUESTION_KEYS)
            if isinstance(question, str) and question.strip():
                named = _field(element, _DIMENSION_KEYS)
                dimension = match_label(str(named), dimensions) if named else None
                out.append(Question(dimension, question.strip()))
    return [q for q in out if q.question]


def _line_questions(text: str, dimensions: Sequence[str]) -> Iterator[Question]:
    section: str | None = None
    section_from: str | None = None  # the header that set `section`
    for item in _items(text):
        if item.header != section_from:
            section_from = item.header
            section = match_label(item.header, dimensions)
        dimension, question, had_tag = _tagged(item.text, dimensions)
        # "1. **Spatial layout**" heading a group of numbered questions
        short = "?" not in question and len(question.split()) <= 5 and question[-1:] != "."
        heading = match_label(question, dimensions) if short and not had_tag else None
        if heading:
            section = heading
            continue
        # a marked item may be an instruction ("Describe the light."); a bare line must ask
        if (
            _is_chatter(question)
            or "?" not in question
            and (not item.marked or len(question.split()) < 3)
        ):
            continue
        # "Colour: what colour is the sky?" leaves a lower-case question behind its tag
        question = question[:1].upper() + question[1:]
        yield Question(dimension if had_tag else section, question)


# ---------------------------------------------------------------------------- verdicts

_UNVERIFIABLE = (
    r"un\s*-?verifiable|not\s+verifiable|non-?verifiable|unverified|not\s+verified"
    r"|(?:cannot|can\s*not|can't|could\s*not|couldn't|unable\s+to|impossible\s+to"
    r"|not\s+possible\s+to|no\s+way\s+to)\s+(?:be\s+)?(?:verif\w*|confirm\w*|determin\w*"
    r"|tell|see|assess\w*|judg\w*|establish\w*|know|decide|say)"
    r"|not\s+(?:clearly\s+)?(?:visible|shown|discernible|determinable|evident|apparent|clear"
    r"|enough|sure|certain|depicted|identifiable|legible|readable)"
    r"|not\s+supported|unsupported|insufficient|unknown|unclear|uncertain|undetermined"
    r"|indeterminate|unsure|ambiguous|neutral|neither|n/a|not\s+applicable|not\s+enough"
)
# "partially correct" and the like count as inconsistent: some part of the fact is wrong
_INCONSISTENT = (
    r"inconsistent|not\s+consistent|incorrect|not\s+correct|contradict\w*|refut\w*"
    r"|inaccurate|not\s+accurate|false|untrue|not\s+true|wrong|mismatch\w*"
    r"|(?:does\s+not|doesn't|do\s+not|don't)\s+match\w*|hallucinat\w*|partial(?:ly)?\s+\w+"
    r"|partly\s+\w+|not\s+the\s+case"
)
_CONSISTENT = (
    r"consistent|correct|accurate|supported|verified|confirmed|true|matche?s?|entail\w*"
    r"|valid|agrees?"
)
# one alternation, so the leftmost phrase wins and "not consistent" beats "consistent"
_TERMS = re.compile(
    rf"\b(?:(?P<u>{_UNVERIFIABLE})|(?P<i>{_INCONSISTENT})|(?P<c>{_CONSISTENT}))\b",
    re.IGNORECASE,
)
_WEAK_FIRST_WORD = {
    "yes": CONSISTENT,
    "right": CONSISTENT,
    "no": INCONSISTENT,
    "wrong": INCONSISTENT,
}
_PREDICATIVE = re.compile(
    r"\b(?:is|are|seems|appears|looks|remains|verdict|judged|judge\s+it|rate\s+it)\s*:?\s+"
    r"(?:(?!partial|partly)\w+ly\s+)?(?=\S)",
    re.IGNORECASE,
)
_KEYS = {
    "verdict": r"verdict|judg(?:e)?ment|label|result|decision|classification|rating|assessment"
    r"|answer",
    "reason": r"reason(?:ing)?|explanation|rationale|justification|evidence",
    "correction": r"correction|corrected(?:\s+(?:fact|statement|claim|version))?"
    r"|revised(?:\s+(?:fact|statement|claim))?|fix(?:ed)?(?:\s+(?:fact|statement))?",
}
_KEY = re.compile(
    r"(?:^|(?<=[\s.;,(]))[*_#\s]*(?:"
    + "|".join(f"(?P<{name}>{pattern})" for name, pattern in _KEYS.items())
    + r")[*_\s]*[:=][*_\s]*",
    re.IGNORECASE,
)
_NO_CORRECTION = re.compile(
    r"^(?:none|null|nil|n/?a|na|-+|no|nothing|not\s+(?:needed|applicable|required)"
    r"|no\s+(?:correction|change)s?(?:\s+(?:is\s+)?(?:needed|required|necessary))?)\W*$",
    re.IGNORECASE,
)
_LABEL = {"u": UNVERIFIABLE, "i": INCONSISTENT, "c": CONSISTENT}


def _classify(match: re.Match) -> str:
    return next(_LABEL[group] for group, value in match.groupdict().items() if value)


def normalise_verdict(text: str) -> str | None:
    """consistent / inconsistent / unverifiable from a verdict word or sentence, or None."""
    plain = strip_inline_markdown(text).strip(" \t\n\"'*_#.:;,!-")
    first = re.match(r"\w+", plain.lower())
    at_start = _TERMS.match(plain)
    if at_start:
        return _classify(at_start)
    if first and first.group() in _WEAK_FIRST_WORD:
        return _WEAK_FIRST_WORD[first.group()]
    # "... so the statement is inconsistent": the last predicative verdict is the conclusion
    predicative = [
        term for match in _PREDICATIVE.finditer(plain) if (term := _TERMS.match(plain, match.end()))
    ]
    if predicative:
        return _classify(predicative[-1])
    if match := _TERMS.search(plain):
        return _classify(match)
    return None


def parse_verdict(text: str) -> Verdict:
    """A critic's verdict on one fact, from JSON, `Verdict: ... Reason: ...` or prose."""
    prepared = _require_text(text)
    for value in find_json(prepared):
        candidates = value if isinstance(value, list) else [value]
        for candidate in candidates:
            if isinstance(candidate, dict) and (verdict := _json_verdict(candidate)):
                return verdict
    fields = _key_values(prepared)
    if "verdict" in fields and (label := normalise_verdict(fields["verdict"])):
        reason = fields.get("reason", _after_opening(fields["verdict"]))
        return _verdict(label, reason, fields.get("correction"))
    return _prose_verdict(prepared, fields, text)


def _json_verdict(mapping: dict) -> Verdict | None:
    raw = _field(mapping, ("verdict", "label", "judgement", "judgment", "result", "decision"))
    if raw is None:
        raw = _field(mapping, ("consistent", "is_consistent", "answer", "classification"))
    if isinstance(raw, bool):
        label = CONSISTENT if raw else INCONSISTENT
    elif isinstance(raw, str):
        label = normalise_verdict(raw)
    else:
        return None
    if label is None:
        return None
    reason = _field(mapping, ("reason", "reasoning", "explanation", "rationale", "evidence"))
    correction = _field(
        mapping, ("correction", "corrected_fact", "corrected", "corrected_statement", "fix")
    )
    return _verdict(label, str(reason or ""), None if correction is None else str(correction))


def _key_values(text: str) -> dict[str, str]:
    matches = list(_KEY.finditer(text))
    fields: dict[str, str] = {}
    ends = [following.start() for following in matches[1:]] + [len(text)] * bool(matches)
    for match, end in zip(matches, ends, strict=True):
        name = next(key for key, value in match.groupdict().items() if value)
        value = " ".join(strip_inline_markdown(text[match.end() : end]).split())
        if name not in fields and value:
            fields[name] = value
    return fields


def _prose_verdict(prepared: str, fields: dict[str, str], original: str) -> Verdict:
    body = " ".join(strip_inline_markdown(line) for line in prepared.split("\n") if line.strip())
    cut = _KEY.search(body)
    judged = body[: cut.start()] if cut and cut.start() > 0 else body
    label = normalise_verdict(judged)
    if label is None:
        raise ParseError("no_verdict", f"no verdict in {snippet(original)}")
    plain = judged.strip(" \t\"'*_#")
    reason = _after_opening(plain) if _opening(plain) else plain
    return _verdict(label, fields.get("reason", reason), fields.get("correction"))


def _opening(text: str) -> re.Match | None:
    return _TERMS.match(text) or re.match(r"(?i)(?:yes|no|right|wrong)\b", text)


def _after_opening(text: str) -> str:
    """What follows a leading verdict: "Inconsistent. The horse is brown." -> the second
    sentence, which is the reason."""
    text = text.strip(" \t\"'*_#")
    opening = _opening(text)
    return text[opening.end() :].lstrip(" .:;,!-\u2013\u2014") if opening else ""


def _verdict(label: str, reason: str, correction: str | None) -> Verdict:
    reason = _strip_quotes(" ".join(strip_inline_markdown(reason).split()))
    reason = reason[:1].upper() + reason[1:]
    if correction is not None:
        correction = _strip_quotes(" ".join(strip_inline_markdown(correction).split()))
        if not correction or _NO_CORRECTION.match(correction):
            correction = None
    if label == CONSISTENT:
        correction = None  # nothing to correct; a model sometimes repeats the fact here
    return Verdict(label, reason, correction)


# ---------------------------------------------------------------------------- QA pairs

_CANNOT_TELL = re.compile(
    # "Unknown", "It is not visible", "The creator cannot be identified from the image"
    r"^(?:(?:it|this|that|the|its)\b(?:\s+\w+){0,3}?(?:\s+is|\s+are|'s)?\s+)?(?:"
    r"(?:cannot|can\s*not|can't|could\s*not|couldn't|unable\s+to|impossible\s+to"
    r"|not\s+possible\s+to)\s+(?:be\s+)?(?:tell|told|determin\w*|see|seen|know|known|identif\w*"
    r"|read|say|verif\w*|infer\w*|judg\w*)"
    r"|not\s+(?:visible|shown|clear|determinable|identifiable|legible|readable|known|evident"
    r"|apparent|discernible|indicated|stated|specified)"
    r"|unknown|unclear|undetermined|indeterminate|unidentified|n/?a\b|none\s+visible"
    r"|no\s+(?:visible|readable|legible|discernible)\b"
    r"|there\s+is\s+no\s+(?:visible|readable|legible|discernible)\b"
    r"|the\s+(?:image|picture|photo(?:graph)?)\s+(?:does\s+not|doesn't|cannot|can't)\s+"
    r"(?:show|reveal|indicate|tell|contain|say)"
    r"|(?:i\s+)?(?:cannot|can't|can\s+not)\s+tell"
    r")",
    re.IGNORECASE,
)
_PIPE_HEADER = {"category", "question", "answer", "q", "a", "categories"}
_QA_KEY = re.compile(
    r"^(?:\d{1,3}[.)]\s*|[-*\u2022]\s+)?[*_]*(?P<key>category|question|answer|q|a)\s*\d*"
    r"[*_]*\s*[:.)]\s*[*_]*\s*(?P<value>.*)$",
    re.IGNORECASE,
)
_ANSWER_LABEL = re.compile(r"^(?:a|answer)\s*:\s*", re.IGNORECASE)
_INLINE_ANSWER = re.compile(r"\s+(?:\*\*)?(?:a|answer)(?:\*\*)?\s*:\s*", re.IGNORECASE)


def normalise_answer(answer: str) -> str:
    """The answer, or CANNOT_TELL when it says the image does not show it."""
    answer = _strip_quotes(" ".join(strip_inline_markdown(answer).split()))
    return CANNOT_TELL if _CANNOT_TELL.match(answer) else answer


def parse_qa(text: str, categories: Sequence[str]) -> list[QAPair]:
    """Question-answer pairs, each under one of `categories`; pairs under no known category
    and pairs missing a question or an answer are dropped."""
    prepared = _require_text(text)
    value = _json_list(prepared)
    if value is not None:
        raw = _json_pairs(value, categories)
    else:
        raw = list(_line_pairs(prepared, categories))
    pairs: list[QAPair] = []
    seen: set[tuple[str, str]] = set()
    for category, question, answer in raw:
        label = match_label(category, categories)
        question = _strip_quotes(" ".join(strip_inline_markdown(question).split()))
        answer = normalise_answer(answer)
        key = (label or "", fold(question))
        if label and question and answer and key not in seen:
            seen.add(key)
            pairs.append(QAPair(label, question, answer))
    if not pairs:
        raise ParseError("no_pairs", f"no question-answer pairs in {snippet(text)}")
    return pairs


def _json_pairs(value: Any, categories: Sequence[str]) -> list[tuple[str, str, str]]:
    if value is None:
        return []
    if isinstance(value, dict):
        keyed = {key: v for key, v in value.items() if match_label(key, categories)}
        if keyed:  # {"material": {"question": ..., "answer": ...}, ...}
            out = []
            for key, pair in keyed.items():
                if isinstance(pair, dict):
                    out.extend(_json_pairs([{"category": key, **pair}], categories))
                elif isinstance(pair, list) and len(pair) == 2:
                    out.append((key, str(pair[0]), str(pair[1])))
            return out
        lists = [v for v in value.values() if isinstance(v, list)]
        return _json_pairs(lists[0], categories) if len(lists) == 1 else []
    out = []
    for element in value if isinstance(value, list) else []:
        if not isinstance(element, dict):
            continue
        category = _field(element, ("category", "cat", "field", "aspect"))
        question = _field(element, ("question", "q"))
        answer = _field(element, ("answer", "a", "response"))
        if category is not None and question is not None and answer is not None:
            out.append((str(category), str(question), str(answer)))
    return out


def _pipe_cells(line: str) -> list[str] | None:
    content, _ = _strip_marker(line)
    if content.count("|") < 1:
        return None
    cells = [strip_inline_markdown(cell).strip() for cell in content.strip().strip("|").split("|")]
    if all(re.fullmatch(r":?-{2,}:?", cell) or not cell for cell in cells):
        return []  # a markdown table's separator row
    if {fold(cell) for cell in cells} <= _PIPE_HEADER:
        return []  # its header row
    return cells


def _line_pairs(text: str, categories: Sequence[str]) -> Iterator[tuple[str, str, str]]:
    category: str | None = None
    question: str | None = None
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or _RULE.match(line):
            continue
        cells = _pipe_cells(line)
        if cells == []:
            continue
        if cells and len(cells) >= 3:
            yield cells[0], cells[1], " | ".join(cells[2:])
            continue
        if cells and len(cells) == 2 and category:
            yield category, cells[0], cells[1]
            continue
        if match := _QA_KEY.match(strip_inline_markdown(line)):
            key, value = match["key"].lower(), match["value"].strip()
            if key == "category":
                category, question = value.rstrip(":"), None
            elif key[0] == "q":
                # "Q: What is it made of? A: Wood." on one line
                parts = _INLINE_ANSWER.split(value, maxsplit=1)
                question = parts[0]
                if len(parts) == 2 and category:
                    yield category, parts[0], parts[1]
                    question = None
            elif question and category:
                yield category, question, value
                question = None
            continue
        plain = strip_inline_markdown(_HEADER.sub(lambda m: m["hash"] or m["bold"], line))
        content, _ = _strip_marker(plain)
        label, rest, had_tag = _tagged(content, categories)
        if had_tag and label:
            category, question = label, None
            # "[material] What is it made of? Wood." -- the answer follows the question mark
            asked, mark, answered = rest.partition("?")
            answered = _ANSWER_LABEL.sub("", answered.strip(" -\u2013\u2014:"))
            if mark and answered:
                yield label, asked + "?", answered
            elif mark:
                question = asked + "?"
        elif "?" not in content and (heading := match_label(content.rstrip(":"), categories)):
            category, question = heading, None


# ---------------------------------------------------------------------------- captions

_INTERJECTION = re.compile(
    r"^(?:sure|certainly|of course|okay|ok|absolutely|alright|great|got it)\b[!.,:]*\s*", re.I
)
_INTRO = re.compile(
    r"^(?:here(?:'s| is| are)|below is|i(?:'ve| have) (?:written|rewritten|revised))"
    r"\b[^:\n]{0,100}?:\s*",
    re.I,
)
_INTRO_SENTENCE = re.compile(
    r"^(?:here(?:'s| is| are)|below is|i(?:'ve| have) (?:written|rewritten|revised))\b"
    r"[^.\n]{0,100}[.!]$",
    re.I,
)
_CAPTION_LABEL = re.compile(
    r"^(?:(?:final|revised|rewritten|corrected|new|updated|expanded|improved|objective"
    r"|detailed|fused|longer)\s+)*(?:caption|description|formal analysis|analysis|answer"
    r"|output)\s*(?:\(\d+\s*characters\))?\s*:\s*",
    re.I,
)
_TITLE_WORDS = re.compile(
    r"\b(?:caption|description|analysis|image|artwork|picture|photograph|overview|summary)\b",
    re.I,
)
_REFUSAL = re.compile(
    r"^(?:i'm sorry|i am sorry|sorry,|i cannot|i can't|i can not|i am unable|i'm unable"
    r"|as an ai|unfortunately,? i\b|i do not see|i don't see|i'm not able|i am not able)",
    re.I,
)
# where a reply's caption ends and its remarks about the caption begin
_AFTERWORD = re.compile(
    r"""^\(?(?:
        notes?\s*: | please\s+note | explanation\s*: | changes?(?:\s+made)?\s*:
      | edits?(?:\s+made)?\s*: | summary\s+of\s+(?:changes|edits)
      | i(?:'ve|\s+have)\s | i\s+(?:removed|corrected|kept|replaced|changed|added|hope|made)\b
      | i'd\s | i\s+would\s | hope\s+this | let\s+me\s+know | feel\s+free | if\s+you\s
      | this\s+(?:caption|description|revised|rewritten|version|revision)\b
      | the\s+(?:revised|rewritten|above|new|updated|corrected)\s+(?:caption|description)
      | (?:word|character)\s+count | \d+\s+(?:characters|words)\b
      | is\s+there\s+anything
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_SENTENCES = re.compile(r"(?<=[.!?)])\s+(?=\S)")
_APOSTROPHE = re.compile(r"(?<=\w)'(?=\w)")


def clean_caption(text: str) -> str:
    """The caption alone: no preamble, label, surrounding quotes, markdown or afterword.

    Paragraph breaks survive (a formal analysis has several); a heading line becomes a
    "Heading:" lead-in of the paragraph under it. Typographic quotes become plain ones.
    """
    lines = [line.strip() for line in prepare(text).split("\n")]
    if not any(lines):
        raise ParseError("empty", "the reply is empty")
    if _REFUSAL.match(strip_inline_markdown(lines[0])):
        raise ParseError("refusal", f"the model declined: {snippet(text)}")
    lines = _drop_afterword(_drop_preamble(lines))
    caption = _strip_quotes(_CAPTION_LABEL.sub("", _join_paragraphs(lines)).strip())
    if not re.search(r"[^\W_]", caption):
        raise ParseError("empty", f"no caption left in {snippet(text)}")
    return caption


def _drop_preamble(lines: list[str]) -> list[str]:
    while lines:
        line = lines[0]
        if not line or _RULE.match(line):
            lines = lines[1:]
            continue
        if heading := _HEADER.match(line):
            if _is_title(heading["hash"] or heading["bold"], lines[1:]):
                lines = lines[1:]
                continue
            break
        plain = strip_inline_markdown(line)
        rest = _INTERJECTION.sub("", plain)
        rest = _INTRO.sub("", rest)
        rest = _CAPTION_LABEL.sub("", rest).strip()
        if not rest or _INTRO_SENTENCE.match(rest) or (rest != plain and _is_chatter(rest)):
            lines = lines[1:]
            continue
        if rest != plain:
            lines = [rest, *lines[1:]]
        break
    return lines


def _is_title(heading: str, below: list[str]) -> bool:
    """A heading over the whole reply ("## Caption"), not over its first paragraph."""
    if _TITLE_WORDS.search(heading):
        return True
    following = next((line for line in below if line), "")
    return bool(_HEADER.match(following))


def _drop_afterword(lines: list[str]) -> list[str]:
    seen_content = False
    for index, line in enumerate(lines):
        plain = strip_inline_markdown(line).lstrip("*_(# ")
        if seen_content and _AFTERWORD.match(plain):
            lines = lines[:index]
            break
        seen_content = seen_content or bool(plain)
    while lines and not lines[-1]:
        lines = lines[:-1]
    if lines:
        # trailing chatter inside the last paragraph: "... background. Let me know if ..."
        sentences = _SENTENCES.split(lines[-1])
        while len(sentences) > 1 and _AFTERWORD.match(sentences[-1].lstrip("*_( ")):
            sentences.pop()
        lines[-1] = " ".join(sentences)
    return lines


def _join_paragraphs(lines: list[str]) -> str:
    paragraphs: list[str] = []
    current: list[str] = []
    lead_in: str | None = None
    for line in [*lines, ""]:
        heading = _HEADER.match(line) if line else None
        if not line or _RULE.match(line) or heading:
            if current:
                paragraphs.append(" ".join(current))
                current = []
            if heading:
                lead_in = strip_inline_markdown(heading["hash"] or heading["bold"]).rstrip(":")
            continue
        content = strip_inline_markdown(_strip_marker(line)[0])
        if lead_in is not None:
            content, lead_in = f"{lead_in}: {content}", None
        current.append(content)
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)


def _strip_quotes(caption: str) -> str:
    """Quotes around the whole caption go; `"OPEN" is above the "EXIT"` keeps its quotes."""
    while len(caption) > 2 and caption[0] in "\"'" and caption[-1] == caption[0]:
        inner = caption[1:-1]
        quotes = [i for i, char in enumerate(_APOSTROPHE.sub("_", inner)) if char == caption[0]]
        # an inner quote right after a letter closes a span the leading quote opened
        if quotes and (quotes[0] == 0 or not inner[quotes[0] - 1].isspace()):
            break
        caption = inner.strip()
    return caption
