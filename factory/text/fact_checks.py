"""Fact checks: one critic verdict on one fact, as the critic stage stores it and the
rewrite prompt shows it ({"fact", "verdict", "reason", "correction"}; a null verdict
carries why the answer could not be read)."""

from __future__ import annotations

from factory.text.parse import CONSISTENT, ParseError, Verdict, parse_verdict


def check(fact: str, answer: str) -> dict:
    """One fact check from a free-text answer, parsed leniently."""
    try:
        verdict = parse_verdict(answer)
    except ParseError as error:
        return unjudged(fact, error.detail)
    return as_check(fact, verdict)


def unjudged(fact: str, reason: str) -> dict:
    """A fact whose verdict could not be read, with why."""
    return {"fact": fact, "verdict": None, "reason": reason, "correction": None}


def as_check(fact: str, verdict: Verdict) -> dict:
    """One fact check from a parsed or validated verdict."""
    return {
        "fact": fact,
        "verdict": verdict.verdict,
        "reason": verdict.reason,
        "correction": verdict.correction,
    }


def critic_score(checks: list[dict]) -> float | None:
    """The share of judged facts that are consistent; None when no fact was judged."""
    judged = [c for c in checks if c["verdict"] is not None]
    return sum(c["verdict"] == CONSISTENT for c in judged) / len(judged) if judged else None


def needs_rewrite(checks: list[dict]) -> bool:
    """Whether any judged fact is not consistent."""
    return any(c["verdict"] is not None and c["verdict"] != CONSISTENT for c in checks)


def verdict_lines(checks: list[dict]) -> str:
    """The judged facts as the rewrite prompt shows them."""
    lines = []
    for c in checks:
        if c["verdict"] is None:
            continue
        line = f"- [{c['verdict']}] {c['fact']}"
        if c["reason"]:
            line += f" (why: {c['reason']})"
        if c["correction"]:
            line += f" -> correct to: {c['correction']}"
        lines.append(line)
    return "\n".join(lines)
