"""Fact checks as the critic stores them and the rewrite prompt shows them."""

from factory.text.fact_checks import check, critic_score, needs_rewrite, verdict_lines


def test_an_answer_that_reads_as_a_verdict_becomes_a_check():
    judged = check(
        "The horse is red.",
        '{"verdict": "inconsistent", "reason": "it is brown", "correction": "The horse is brown."}',
    )
    assert judged["fact"] == "The horse is red." and judged["verdict"] == "inconsistent"
    assert judged["correction"] == "The horse is brown."


def test_an_unreadable_answer_keeps_a_null_verdict_and_says_why():
    judged = check("The sky is blue.", "")
    assert judged["verdict"] is None and judged["reason"]


def test_only_a_judged_fact_that_is_not_consistent_asks_for_a_rewrite():
    fine = {"fact": "a", "verdict": "consistent", "reason": None, "correction": None}
    unread = {"fact": "b", "verdict": None, "reason": "cut off", "correction": None}
    wrong = {"fact": "c", "verdict": "inconsistent", "reason": "no", "correction": "d"}
    assert not needs_rewrite([fine, unread])
    assert needs_rewrite([fine, wrong])
    assert verdict_lines([fine, unread, wrong]) == (
        "- [consistent] a\n- [inconsistent] c (why: no) -> correct to: d"
    )


def test_the_critic_score_is_the_consistent_share_of_the_judged_facts():
    fine = {"fact": "a", "verdict": "consistent", "reason": None, "correction": None}
    unread = {"fact": "b", "verdict": None, "reason": "cut off", "correction": None}
    wrong = {"fact": "c", "verdict": "inconsistent", "reason": "no", "correction": "d"}
    assert critic_score([fine, unread, wrong]) == 0.5
    assert critic_score([unread]) is None and critic_score([]) is None
