"""Each health rule fires on what it is for and stays quiet on look-alikes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from factory.text.health import Flag, HealthRules, check_text

RULES = HealthRules()
HEALTHY = "A brown horse stands in the centre of a field, with a wooden fence at the back."


def rules_of(text: str, style: str = "detailed", **names) -> set[str]:
    return {flag.rule for flag in check_text(text, style, RULES, **names)}


def test_a_healthy_caption_has_no_flags():
    assert check_text(HEALTHY, "objective", RULES) == []


def test_flags_are_frozen_and_carry_details():
    flags = check_text("aN oLd DrAwInG!!!!", "objective", RULES)
    assert flags and all(isinstance(flag, Flag) and flag.detail for flag in flags)
    with pytest.raises(AttributeError):
        flags[0].rule = "other"  # type: ignore[misc]


def test_rules_are_documented_and_strict():
    for name, field in HealthRules.model_fields.items():
        assert field.description, name
    with pytest.raises(ValidationError):
        HealthRules(min_token=3)  # a misspelt field is an error, not a silent default


# ---------------------------------------------------------------- too_short


@pytest.mark.parametrize("text", ["", "Horse", "  horse!  ", "!!"])
def test_too_short(text):
    assert "too_short" in rules_of(text)


@pytest.mark.parametrize("text", ["A horse", "Two boats."])
def test_not_too_short(text):
    assert "too_short" not in rules_of(text)


def test_min_tokens_is_configurable():
    rules = HealthRules(min_tokens=5)
    assert [f.rule for f in check_text("A horse in fields", "x", rules)] == ["too_short"]


# ---------------------------------------------------------------- banned_word


@pytest.mark.parametrize(
    "text",
    [
        "bad example",
        "Bad Example of a drawing",
        "A horse. N/A",
        "Lorem ipsum dolor sit amet",
        "As an AI, I think the horse is brown.",
        "I’m sorry, the image is dark.",  # typographic apostrophe
    ],
)
def test_banned(text):
    assert "banned_word" in rules_of(text)


@pytest.mark.parametrize(
    "text",
    [
        "A badly drawn example of a horse.",  # the words, not the phrase
        "A blahnik shoe on a shelf.",  # whole words only
        "A man and a woman stand on a bridge.",  # 'n/a' is not inside 'man and a'
        "A wooden todos-santos mask.",
    ],
)
def test_not_banned(text):
    assert "banned_word" not in rules_of(text)


def test_banned_lists_are_configurable():
    rules = HealthRules(banned_words=["horse"], banned_phrases=[])
    assert [f.rule for f in check_text(HEALTHY, "x", rules)] == ["banned_word"]
    assert check_text("bad example here", "x", HealthRules(banned_words=[])) == []


# ---------------------------------------------------------------- junk


@pytest.mark.parametrize(
    "text",
    [
        "aN oLd DrAwInG",
        "a very oLd sHip",
        "A DrAwInG of a ship",
        "an old drawing!!!!",
        "what is this ????",
        "a ship ?!?! in the harbour",
        "A boat.... on the water",
        "soooooo pretty picture",
        "12 34 56 78 -- 90",
    ],
)
def test_junk(text):
    assert "junk" in rules_of(text)


@pytest.mark.parametrize(
    "text",
    [
        "Inconsistent lighting falls on a table.",
        "A McDonald's sign and an iPhone on a desk.",
        "The DEArt dataset logo on a white wall.",
        "A sign reads USA in capital letters.",
        "The horse waits... then the rider mounts.",
        "Is the gate open?! A boy runs towards it.",
        "A plaque dated 1887-1890 hangs on the wall.",
        "Roman numerals XVIII appear on the clock face.",
        "Plate 12, fig. 3-4, 1887",
    ],
)
def test_not_junk(text):
    assert "junk" not in rules_of(text)


# ---------------------------------------------------------------- too_long


def test_too_long_for_a_style_with_a_limit():
    text = "A horse stands in a field. " * 10  # 270 characters
    assert "too_long" in rules_of(text.strip(), "objective")


def test_length_limits_are_per_style():
    text = ("A horse stands in a field, and a boat floats on a lake. " * 5).strip()
    assert len(text) > 250
    assert "too_long" in rules_of(text, "objective")
    assert "too_long" not in rules_of(text, "detailed")
    assert "too_long" not in rules_of("x" * 10 + " horse", "objective")
    rules = HealthRules(max_chars={"detailed": 20})
    assert "too_long" in {f.rule for f in check_text(HEALTHY, "detailed", rules)}


def test_exactly_at_the_limit_is_fine():
    text = ("a " * 125).strip() + "b"  # 250 characters
    assert len(text) == 250
    assert "too_long" not in rules_of(text, "objective")


# ---------------------------------------------------------------- repetition


@pytest.mark.parametrize(
    "text",
    [
        "the horse the horse the horse the horse",
        "A ship sails and sails and sails and sails away.",
        "The sky is blue. The sky is blue. The sky is blue.",
        "A horse stands. A tree grows. A horse stands. A cloud drifts. A horse stands.",
        "very very very old",
        # a loop that never repeats back to back but has almost no vocabulary left
        " ".join(["horse cart", "cart horse", "horse horse cart"] * 12),
    ],
)
def test_repetition(text):
    assert "repetition" in rules_of(text)


@pytest.mark.parametrize(
    "text",
    [
        "A bowl holds red, green, blue and yellow fruit.",
        "A horse, a horse and a cart stand on the road.",  # twice is not a loop
        "Two figures stand on the left; two figures sit on the right.",
        "The sky is blue. The sea is blue. The boat is blue.",
        "Very very old walls surround the yard.",
        # ordinary long prose keeps a rich vocabulary
        "In the foreground a woman in a red shawl carries a basket of bread along a "
        "cobbled street, while behind her two boys chase a dog past a row of shops. "
        "Above the doors hang painted signs, and laundry is strung between the upper "
        "windows. Smoke rises from a chimney on the right, and pale clouds cross a "
        "summer sky at the top of the picture.",
    ],
)
def test_not_repetition(text):
    assert "repetition" not in rules_of(text)


# ---------------------------------------------------------------- leaks


def test_title_leak_in_formal_analysis():
    text = "The Starry Night swirls with curved strokes across the top."
    assert "title_leak" in rules_of(text, "formal_analysis", title="The Starry Night")
    # case and diacritics do not hide it; the leading article is optional
    text = "In starry night the brushwork is thick."
    assert "title_leak" in rules_of(text, "formal_analysis", title="The Starry Night")
    text = "Le Dejeuner sur l'herbe is built on a triangle."
    assert "title_leak" in rules_of(text, "formal_analysis", title="Le Déjeuner sur l'herbe")


def test_title_leak_only_in_leak_styles():
    text = "The Starry Night swirls with curved strokes across the top."
    assert "title_leak" not in rules_of(text, "detailed", title="The Starry Night")
    rules = HealthRules(check_leaks=False)
    assert check_text(text, "formal_analysis", rules, title="The Starry Night") == []


@pytest.mark.parametrize(
    ("text", "title"),
    [
        # generic titles say what the picture shows; describing it is not naming it
        ("A portrait of a woman in a blue dress, lit from the left.", "Portrait of a Woman"),
        ("The landscape recedes towards a low horizon.", "Landscape"),
        ("Untitled shapes overlap in the centre.", "Untitled"),
        ("A plate dated 1887 rests on the shelf.", "1887"),
        ("Study 5 shows a hand.", "Study No. 5"),
        ("Yellow sunflowers crowd a clay vase.", "Sunflowers"),  # lower case: a noun
        ("A night sky with many stars fills the top.", "The Starry Night"),
        ("The shapes balance each other.", None),
        ("The shapes balance each other.", ""),
    ],
)
def test_no_title_leak(text, title):
    assert "title_leak" not in rules_of(text, "formal_analysis", title=title)


def test_one_word_title_counts_as_a_name_when_capitalised():
    # documented trade-off: at the start of a sentence a capitalised noun looks like a name
    assert "title_leak" in rules_of(
        "Guernica is built from grey tones.", "formal_analysis", title="Guernica"
    )
    assert "title_leak" in rules_of(
        "Sunflowers crowd a vase.", "formal_analysis", title="Sunflowers"
    )


@pytest.mark.parametrize(
    ("text", "creator"),
    [
        ("Claude Monet layers short strokes of colour.", "Claude Monet"),
        ("claude monet layers short strokes.", "Claude Monet"),  # full name, any case
        ("Monet's strokes are short and broken.", "Claude Monet"),
        ("Monet's strokes are short and broken.", "MONET, Claude (French, 1840-1926)"),
        ("Durer's lines are fine and even.", "Albrecht Dürer"),
        ("Van Gogh's impasto is thick.", "Vincent van Gogh"),
        ("Rembrandt places the light on the left.", "Rembrandt van Rijn"),
        ("Rose's brushwork is loose and quick.", "Thomas Rose"),
    ],
)
def test_creator_leak(text, creator):
    assert "creator_leak" in rules_of(text, "formal_analysis", creator=creator)


@pytest.mark.parametrize(
    ("text", "creator"),
    [
        # "Rose" as a surname does not fire on the flower or the colour: a name match needs
        # a capital and no hyphenated compound (so "Rose-tinted" at a sentence start is
        # quiet too, and so would "Rembrandt-like" be)
        ("Rose-coloured light falls on a red rose in the centre.", "Thomas Rose"),
        ("A rose lies on the table.", "Thomas Rose"),
        ("Rose-tinted clouds drift at the top.", "Thomas Rose"),
        # short and stop-word name parts are not matched alone
        ("The scroll shows Li Mountain in mist.", "Li Cheng"),
        ("The figure of a man stands in the doorway.", "Master of the Figure"),
        ("The work of an unknown hand shows a boat.", "Unknown"),
        ("The work of an unknown hand shows a boat.", "Anonymous, workshop of"),
        ("Bold lines frame the centre.", None),
    ],
)
def test_no_creator_leak(text, creator):
    assert "creator_leak" not in rules_of(text, "formal_analysis", creator=creator)


def test_every_rule_at_once():
    text = "aN oLd DrAwInG bad example " + "the horse " * 40
    flags = check_text(text, "formal_analysis", RULES, title="The Horse Fair", creator="Bonheur")
    assert {flag.rule for flag in flags} == {"banned_word", "junk", "repetition"}
    text = "Rosa Bonheur painted The Horse Fair. " * 8
    flags = check_text(
        text,
        "objective",
        HealthRules(leak_styles=["objective"]),
        title="The Horse Fair",
        creator="Rosa Bonheur",
    )
    assert {flag.rule for flag in flags} == {"too_long", "repetition", "title_leak", "creator_leak"}
