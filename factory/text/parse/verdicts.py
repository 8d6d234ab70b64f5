"""A critic's verdict on one fact: consistent, inconsistent or unverifiable."""

from __future__ import annotations

import re

from factory.text.lenient_json import find_json
from factory.text.normalise import snippet, strip_inline_markdown
from factory.text.parse.items import _field, _strip_quotes
from factory.text.parse.parse_errors import (
    CONSISTENT,
    INCONSISTENT,
    UNVERIFIABLE,
    ParseError,
    Verdict,
    _require_text,
)

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
