"""`import_review`: a reviewer's edits become the right preference pairs, or a precise error."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from factory.io import uris
from factory.prompts import load_prompt
from factory.review.export import export_review
from factory.review.importer import PAIRS_SCHEMA, import_review
from factory.review.review_errors import MalformedReview, ReviewError
from tests.review import fakerun

NEW_CAPTION = "A painting with a red boat on the right, under a pale sky."


def exported(run, folder, n: int = 5, format: str = "jsonl") -> str:
    return export_review(run.output, str(folder), n=n, format=format).review_file


def lines_of(path: str) -> list[str]:
    return Path(path).read_text(encoding="utf-8").splitlines()


def write_lines(path: str, lines: list[str]) -> None:
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def edit_jsonl(path: str, corrections: list[str | None]) -> list[dict]:
    """Fill corrected_caption line by line as a person would; None leaves a line alone."""
    items = [json.loads(line) for line in lines_of(path)]
    for item, corrected in zip(items, corrections, strict=True):
        if corrected is not None:
            item["corrected_caption"] = corrected
    write_lines(path, [json.dumps(item, ensure_ascii=False) for item in items])
    return items


def test_corrections_become_pairs_and_the_rest_are_counted(run, tmp_path):
    review = exported(run, tmp_path / "review")
    fourth_draft = json.loads(lines_of(review)[3])["draft_caption"]
    items = edit_jsonl(
        review,
        [
            NEW_CAPTION,
            None,  # untouched: empty
            "   ",  # only whitespace: no correction
            "  " + fourth_draft.replace(" ", "\n  ") + " ",  # the draft, re-spaced
            f"  {NEW_CAPTION} Two gulls.\n",
        ],
    )
    out = str(tmp_path / "pairs.parquet")
    summary = import_review(str(tmp_path / "review"), out)

    assert (summary.items, summary.pairs) == (5, 2)
    assert summary.skipped == {"no_correction": 2, "unchanged": 1}
    assert "2 preference pairs" in summary.line() and "1 unchanged" in summary.line()
    table = pq.read_table(out)
    assert table.schema == PAIRS_SCHEMA
    pairs = table.to_pylist()
    assert [pair["review_id"] for pair in pairs] == [items[0]["id"], items[4]["id"]]
    assert [pair["chosen"] for pair in pairs] == [NEW_CAPTION, f"{NEW_CAPTION} Two gulls."]
    assert [pair["rejected"] for pair in pairs] == [
        items[0]["draft_caption"],
        items[4]["draft_caption"],
    ]
    assert pairs[0]["uri"] == items[0]["uri"] == run.lowest(1)[0]
    assert pairs[0]["critic_score"] == 0.0
    assert pairs[0]["prompt"] == load_prompt(fakerun.TEMPLATE).render()
    assert "{auxiliary}" not in pairs[0]["prompt"]
    assert (pairs[0]["prompt_template"], pairs[0]["style"], pairs[0]["run_id"]) == (
        fakerun.TEMPLATE,
        "detailed",
        "run-1",
    )


def test_a_spreadsheet_edited_csv_keeps_commas_quotes_newlines_and_accents(run, tmp_path):
    review = exported(run, tmp_path / "review", n=3, format="csv")
    tricky = 'Deux barques, « vague » et un "mont"\nau fond; à droite.'
    with open(review, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[1]["corrected_caption"] = tricky
    # a spreadsheet saves CRLF line ends and no byte-order mark
    with open(review, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)

    summary = import_review(str(tmp_path / "review"), str(tmp_path / "pairs.parquet"))

    assert (summary.pairs, summary.skipped) == (1, {"no_correction": 2})
    pair = pq.read_table(tmp_path / "pairs.parquet").to_pylist()[0]
    assert pair["chosen"] == tricky
    assert (pair["uri"], pair["review_id"]) == (rows[1]["uri"], rows[1]["id"])
    assert pair["critic_score"] == 0.125


def test_nothing_corrected_writes_an_empty_pairs_file(run, tmp_path):
    exported(run, tmp_path / "review", n=2)
    summary = import_review(str(tmp_path / "review"), str(tmp_path / "pairs.parquet"))
    assert (summary.pairs, summary.skipped) == (0, {"no_correction": 2})
    assert pq.read_table(tmp_path / "pairs.parquet").num_rows == 0


def replace_line(path: str, number: int, text: str) -> None:
    lines = lines_of(path)
    lines[number - 1] = text
    write_lines(path, lines)


def test_a_broken_json_line_is_named_by_file_and_line(run, tmp_path):
    review = exported(run, tmp_path / "review")
    line = lines_of(review)[2]
    replace_line(review, 3, line.replace('"corrected_caption": ""', '"corrected_caption": "x'))
    with pytest.raises(MalformedReview, match=r"review\.jsonl, line 3: not valid JSON"):
        import_review(str(tmp_path / "review"), str(tmp_path / "pairs.parquet"))
    assert not os.path.exists(tmp_path / "pairs.parquet")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda item: item.update(corected_caption="typo"), "corected_caption: Extra inputs"),
        (lambda item: item.pop("draft_caption"), "draft_caption: Field required"),
        (lambda item: item.update(critic_score="low"), "critic_score: Input should be a valid"),
        (lambda item: item.update(prompt_template="no_such_prompt.v1"), "unknown prompt"),
    ],
)
def test_an_invalid_item_is_named_by_line(run, tmp_path, change, message):
    review = exported(run, tmp_path / "review")
    item = json.loads(lines_of(review)[3])
    item["corrected_caption"] = NEW_CAPTION
    change(item)
    replace_line(review, 4, json.dumps(item))
    with pytest.raises(MalformedReview, match=rf"review\.jsonl, line 4: .*{message}"):
        import_review(str(tmp_path / "review"), str(tmp_path / "pairs.parquet"))


def test_a_line_that_is_not_an_object_or_repeats_an_item_is_an_error(run, tmp_path):
    review = exported(run, tmp_path / "review")
    lines = lines_of(review)
    replace_line(review, 2, "[1, 2]")
    with pytest.raises(MalformedReview, match="line 2: expected a JSON object"):
        import_review(str(tmp_path / "review"), str(tmp_path / "pairs.parquet"))
    replace_line(review, 2, lines[1])
    replace_line(review, 5, lines[1])  # a pasted duplicate
    with pytest.raises(MalformedReview, match="line 5: id .* repeats the item at line 2"):
        import_review(str(tmp_path / "review"), str(tmp_path / "pairs.parquet"))


def test_a_broken_csv_row_is_named_by_its_first_line(run, tmp_path):
    review = exported(run, tmp_path / "review", n=4, format="csv")
    with open(review, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    rows[1][4] = "first line\nsecond line"  # a multi-line cell: row 2 spans lines 2-3
    rows[3] = rows[3][:5]  # the third item lost its trailing cells: it starts on line 5
    with open(review, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with pytest.raises(MalformedReview, match=r"review\.csv, line 5: 12 columns expected"):
        import_review(str(tmp_path / "review"), str(tmp_path / "pairs.parquet"))


def test_a_csv_facts_cell_that_is_not_json_is_an_error(run, tmp_path):
    review = exported(run, tmp_path / "review", n=2, format="csv")
    with open(review, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[0]["fact_checks"] = "[{'fact': broken"
    with open(review, "w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(MalformedReview, match="line 2: column fact_checks is not valid JSON"):
        import_review(str(tmp_path / "review"), str(tmp_path / "pairs.parquet"))


def test_a_folder_without_a_review_file_or_with_two_is_an_error(run, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no review.jsonl or review.csv in"):
        import_review(str(tmp_path / "empty"), str(tmp_path / "pairs.parquet"))
    review = exported(run, tmp_path / "review", n=1)
    (tmp_path / "review" / "review.csv").write_text("id\n")
    with pytest.raises(MalformedReview, match="holds both"):
        import_review(str(tmp_path / "review"), str(tmp_path / "pairs.parquet"))
    # naming the file itself picks it
    edit_jsonl(review, [NEW_CAPTION])
    assert import_review(review, str(tmp_path / "pairs.parquet")).pairs == 1


def test_out_must_name_a_file_not_a_folder(run, tmp_path):
    exported(run, tmp_path / "review", n=1)
    (tmp_path / "pairs").mkdir()
    with pytest.raises(ReviewError, match="is a folder; name the Parquet file"):
        import_review(str(tmp_path / "review"), str(tmp_path / "pairs"))


def test_review_and_pairs_on_s3(run, tmp_path, s3_bucket):
    folder = f"s3://{s3_bucket}/reviews/one"
    export_review(run.output, folder, n=3)
    local = str(tmp_path / "review.jsonl")  # a reviewer downloads, edits, uploads
    with open(local, "wb") as handle:
        handle.write(uris.read_bytes(f"{folder}/review.jsonl"))
    edit_jsonl(local, [None, NEW_CAPTION, None])
    with open(local, "rb") as handle:
        uris.write_bytes_atomically(f"{folder}/review.jsonl", handle.read())

    out = f"s3://{s3_bucket}/pairs/batch-1.parquet"
    summary = import_review(folder, out)

    assert (summary.pairs, summary.review_file) == (1, f"{folder}/review.jsonl")
    filesystem, path = uris.filesystem(out)
    pairs = pq.read_table(path, filesystem=filesystem).to_pylist()
    assert [(pair["uri"], pair["chosen"]) for pair in pairs] == [(run.lowest(2)[1], NEW_CAPTION)]
