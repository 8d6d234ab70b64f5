"""The shipped label lists and the loader that reads them or a local file."""

from __future__ import annotations

import pytest

from factory import vocab

PROMISED_CATEGORIES = (
    "painting",
    "drawing",
    "print",
    "manuscript page",
    "sculpture",
    "relief",
    "ceramic",
    "textile or tapestry",
    "coin or medal",
    "photograph",
    "architecture",
    "archaeological object",
    "furniture",
    "metalwork",
    "glass",
    "jewellery",
    "arms and armour",
    "map",
)


def test_both_lists_ship_with_the_package():
    assert vocab.shipped() == [vocab.ART_CONCEPTS, vocab.MUSEUM_TAXONOMY]


def test_taxonomy_has_the_promised_categories_and_size():
    categories = vocab.load_vocabulary(vocab.MUSEUM_TAXONOMY)
    assert 20 <= len(categories) <= 30
    assert set(PROMISED_CATEGORIES) <= set(categories)


def test_concepts_are_a_few_hundred_covering_every_promised_kind():
    concepts = vocab.load_vocabulary(vocab.ART_CONCEPTS)
    assert 250 <= len(concepts) <= 500
    # one sample per promised kind: people, animals, mythical beings, religious attributes,
    # objects, clothing, landscape, architecture, materials, techniques
    for concept in ("woman", "horse", "dragon", "halo", "vase", "robe", "mountain", "church"):
        assert concept in concepts
    for concept in ("marble", "etching"):
        assert concept in concepts


@pytest.mark.parametrize("name", [vocab.MUSEUM_TAXONOMY, vocab.ART_CONCEPTS])
def test_shipped_labels_are_unique_clean_and_not_comments(name):
    labels = vocab.load_vocabulary(name)
    assert len({label.casefold() for label in labels}) == len(labels)
    assert all(label == " ".join(label.split()) and not label.startswith("#") for label in labels)


def test_local_file_skips_comments_and_blank_lines_and_normalises_spaces(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("# my list\n\nlion\n  winged   lion\t\n# done\nsun\n", encoding="utf-8")
    assert vocab.load_vocabulary(str(path)) == ["lion", "winged lion", "sun"]


def test_repeated_labels_are_refused_whatever_their_case(tmp_path):
    path = tmp_path / "twice.txt"
    path.write_text("Lion\nsun\nlion\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"repeats labels: \['lion'\]"):
        vocab.load_vocabulary(str(path))


def test_a_list_without_labels_is_refused(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("# nothing yet\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no labels"):
        vocab.load_vocabulary(str(path))


def test_unknown_name_says_what_ships():
    with pytest.raises(FileNotFoundError, match="art_concepts, museum_taxonomy"):
        vocab.load_vocabulary("no_such_list")
