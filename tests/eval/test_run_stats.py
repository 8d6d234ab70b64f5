"""Run statistics over several shards, by hand: counts, distributions, hallucination, gallery."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factory.eval.hallucination import HallucinationConfig
from factory.eval.run_report import write_run_report
from factory.eval.run_stats import load_run, summarise

TAG = pa.struct([pa.field("label", pa.string()), pa.field("score", pa.float32())])


def row(index: int, caption: str, score: float | None, tags: list[str], flags: int = 0) -> dict:
    return {
        "uri": f"img-{index}.png",
        "input_index": index,
        "caption_detailed": caption,
        "critic_score": score,
        "category": "painting" if index % 2 else "print",
        "tags": [{"label": label, "score": 0.5} for label in tags],
        "ocr": [{"text": "x", "score": 1.0}] * index,
        "health_flags": [{"field": "caption_detailed", "rule": "too_short", "detail": ""}] * flags,
        "fact_checks": [{"fact": "f", "verdict": "consistent", "reason": None, "correction": None}],
    }


@pytest.fixture
def run(tmp_path):
    rows = [
        row(0, "A horse and a dog in a field.", 0.5, ["horse", "field"]),
        row(1, "A woman holds a cup.", 1.0, ["woman", "cup"]),
        row(2, "A ship at sea.", None, [], flags=1),
        row(3, "Two horses.", 0.25, ["horse"]),
    ]
    captions = tmp_path / "captions"
    captions.mkdir()
    # two shards: the numbers must add up across them
    pq.write_table(pa.Table.from_pylist(rows[:2]), captions / "part-a.parquet")
    pq.write_table(pa.Table.from_pylist(rows[2:]), captions / "part-b.parquet")
    rejected = tmp_path / "rejected"
    rejected.mkdir()
    reasons = {"uri": ["bad.jpg", "worse.jpg"], "stage": ["validate"] * 2}
    reasons["reason"] = ["corrupt", "corrupt"]
    pq.write_table(pa.table(reasons), rejected / "part-r.parquet")
    return tmp_path


def test_numbers_add_up_across_shards(run):
    stats = load_run(str(run), sample_size=3, gallery_size=2, hallucination=HallucinationConfig())
    summary = summarise(stats)
    assert summary["counts"] == {"accepted": 4, "rejected": 2, "duplicates": 0}
    assert summary["rejected_reasons"] == {"validate/corrupt": 2}
    assert summary["caption_words"]["caption_detailed"]["mean"] == pytest.approx(
        (8 + 5 + 4 + 2) / 4
    )
    assert summary["critic_score"]["n"] == 3 and summary["critic_score"]["median"] == 0.5
    assert summary["ocr_lines"]["max"] == 3 and summary["categories"] == {"print": 2, "painting": 2}
    assert summary["health_flags"] == {"too_short (caption_detailed)": 1}
    # lowest critic score first; the unscored row comes last
    assert [r["uri"] for r in stats.examples] == ["img-3.png", "img-0.png"]
    assert [r["uri"] for r in stats.sample] == ["img-0.png", "img-1.png", "img-2.png"]
    # img-0: horse, dog, field (dog unsupported); img-1: woman, cup; img-3: horse; img-2 untagged
    scores = summary["hallucination"]["caption_detailed"]
    assert scores["judged"] == 3 and scores["chair_i"] == pytest.approx(1 / 6)
    assert scores["chair_s"] == pytest.approx(1 / 3) and scores["coverage"] == pytest.approx(1.0)


def test_report_of_a_run_without_run_json(run):
    target, summary = write_run_report(str(run))
    with open(target, encoding="utf-8") as handle:
        text = handle.read()
    assert "run.json is missing" in text
    assert '<section id="hallucination">' in text and "dog 1" in text
    assert text.count('<div class="example">') == 4 and "(no image)" in text
    assert json.dumps(summary["counts"]) == '{"accepted": 4, "rejected": 2, "duplicates": 0}'


def test_thumbnails_come_from_the_shards_holding_the_wanted_rows(tmp_path):
    import io

    from PIL import Image

    from factory.eval.gallery import run_thumbnails

    def png(colour: tuple[int, int, int]) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (40, 30), colour).save(buffer, "PNG")
        return buffer.getvalue()

    captions = tmp_path / "captions"
    captions.mkdir()
    for shard in range(3):
        uris = [f"s{shard}-{i}.png" for i in range(4)]
        images = [png((60 * shard, 10 * i, 0)) for i in range(4)]
        pq.write_table(pa.table({"uri": uris, "image": images}), captions / f"part-{shard}.parquet")
    wanted = ["s0-1.png", "s2-3.png", "never-written.png"]
    thumbs = run_thumbnails(str(tmp_path), wanted, side=16)
    assert sorted(thumbs) == ["s0-1.png", "s2-3.png"]
    assert all(uri.startswith("data:image/") for uri in thumbs.values())
