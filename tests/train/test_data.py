"""Training examples from a fake caption run (local and S3), manifests and DPO pairs files."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from factory import records
from factory.io import uris
from factory.io.outputs import shard_name
from factory.prompts import load_prompt
from factory.review.importer import PAIRS_SCHEMA
from factory.stages.qa import QA_TYPE
from factory.train.data import (
    DataConfig,
    PreferenceExample,
    SFTExample,
    epoch_examples,
    load_examples,
    validation_images,
)

DETAILED = load_prompt("caption_detailed").render()
OBJECTIVE = load_prompt("caption_objective").render()


def qa(*pairs: tuple[str, str | None]) -> list[dict]:
    return [{"category": "subject", "question": q, "answer": a} for q, a in pairs]


# One row per image, as the caption, qa and loop stages write them. None: a null cell.
IMAGES = [
    {
        "caption_detailed": "A red boat on a grey sea.",
        "caption_objective": "Red boat, grey sea.",
        "qa": qa(("What floats?", "A boat."), ("What colour?", "Red."), ("Who made it?", "x")),
        "draft_style": "detailed",
        "final_caption": None,  # the critic pass left no rewrite: the draft caption stands
    },
    {
        "caption_detailed": "Two dogs run on a beach.",
        "caption_objective": "Two dogs, beach.",
        "qa": qa(("How many dogs?", "Two.")),
        "draft_style": "detailed",
        "final_caption": "Two brown dogs run on a sandy beach.",
    },
    {
        "caption_detailed": "A gold coin with a head in profile.",
        "caption_objective": None,
        "qa": qa(*[(f"Coin question {n}?", f"Coin answer {n}.") for n in range(5)]),
        "draft_style": "objective",  # a rewrite of the other style: detailed keeps its own
        "final_caption": "A worn gold coin.",
    },
    {
        "caption_detailed": "A map of the stars.",
        "caption_objective": "Star map.",
        "qa": qa(("What is shown?", "Stars."), ("When?", "  ")),  # a blank answer
    },
    {
        "caption_detailed": None,
        "caption_objective": "Portrait, woman, hat.",
        "qa": [],
    },
    {
        "caption_detailed": "A vase with blue flowers.",
        "caption_objective": "   ",
        "qa": None,
    },
]
LOOP_COLUMNS = ("draft_style", "final_caption")


def image_uri(root: str, index: int) -> str:
    return uris.join(root, "images", f"img{index}.png")


def captions_table(root: str, indices: range, loop_columns: bool) -> pa.Table:
    rows = []
    for index in indices:
        row = {
            "uri": image_uri(root, index),
            "input_index": index,
            "image": b"\x89PNG bulky bytes the examples never read",
            **{key: value for key, value in IMAGES[index].items() if key not in LOOP_COLUMNS},
            "run_id": "run-1",
        }
        if loop_columns:
            row.update({name: IMAGES[index].get(name) for name in LOOP_COLUMNS})
        rows.append(row)
    fields = [
        pa.field("uri", pa.string()),
        pa.field("input_index", pa.int64()),
        pa.field("image", pa.binary()),
        pa.field("caption_detailed", pa.string()),
        pa.field("caption_objective", pa.string()),
        pa.field("qa", QA_TYPE),
        pa.field("run_id", pa.string()),
    ]
    if loop_columns:
        fields += [pa.field(name, pa.string()) for name in LOOP_COLUMNS]
    return pa.Table.from_pylist(rows, schema=pa.schema(fields))


def write_parquet(uri: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    uris.write_bytes_atomically(uri, buffer.getvalue())


def write_run(output: str) -> str:
    """A caption run's output: two captions/ shards, only the first with the loop columns."""
    for indices, loop_columns in ((range(0, 3), True), (range(3, 6), False)):
        table = captions_table(output, indices, loop_columns)
        name = shard_name(table.column("uri").to_pylist())
        write_parquet(uris.join(output, records.OUTPUT_DIRS[records.OK], name), table)
    return output


def write_jsonl(uri: str, rows: list[dict]) -> str:
    uris.write_bytes_atomically(uri, "".join(json.dumps(r) + "\n" for r in rows).encode())
    return uri


@pytest.fixture(params=["local", "s3"])
def run(request, tmp_path) -> str:
    if request.param == "local":
        return write_run(str(tmp_path / "run"))
    return write_run(f"s3://{request.getfixturevalue('s3_bucket')}/runs/one")


def config(source: str, **fields) -> DataConfig:
    return DataConfig(source=source, **{"kind": "caption", "validation_fraction": 0.0, **fields})


def by_uri(examples: list) -> dict[str, list]:
    grouped: dict[str, list] = {}
    for example in examples:
        grouped.setdefault(example.image_uri, []).append(example)
    return grouped


# --- captions ---------------------------------------------------------------------------


def test_caption_examples_per_style_with_their_prompts(run):
    split = load_examples(config(run, styles=["detailed", "objective"]))

    assert split.validation == []
    expected = {
        (image_uri(run, 0), DETAILED, "A red boat on a grey sea."),
        (image_uri(run, 1), DETAILED, "Two brown dogs run on a sandy beach."),  # final
        (image_uri(run, 2), DETAILED, "A gold coin with a head in profile."),
        (image_uri(run, 3), DETAILED, "A map of the stars."),
        (image_uri(run, 5), DETAILED, "A vase with blue flowers."),
        (image_uri(run, 0), OBJECTIVE, "Red boat, grey sea."),
        (image_uri(run, 1), OBJECTIVE, "Two dogs, beach."),
        (image_uri(run, 2), OBJECTIVE, "A worn gold coin."),  # final; its first pass is null
        (image_uri(run, 3), OBJECTIVE, "Star map."),
        (image_uri(run, 4), OBJECTIVE, "Portrait, woman, hat."),
    }
    got = [(e.image_uri, e.prompt, e.target) for e in split.train]
    assert sorted(got) == sorted(expected)
    assert all(isinstance(e, SFTExample) and e.group == e.image_uri for e in split.train)
    assert DETAILED != OBJECTIVE and "{auxiliary}" not in DETAILED
    stats = split.stats
    assert stats.rows == 6
    assert stats.skipped == {"empty_caption_detailed": 1, "empty_caption_objective": 1}
    assert stats.targets == {"caption_detailed": 4, "final_caption": 2, "caption_objective": 4}


def test_final_caption_replaces_only_its_draft_style(tmp_path):
    run = write_run(str(tmp_path / "run"))
    with_final = load_examples(config(run, styles=["objective"])).train
    targets = {e.image_uri: e.target for e in with_final}
    assert targets[image_uri(run, 2)] == "A worn gold coin."  # objective draft, rewritten
    assert targets[image_uri(run, 1)] == "Two dogs, beach."  # its rewrite was of detailed

    first_pass = load_examples(config(run, styles=["detailed"], use_final_caption=False))
    targets = {e.image_uri: e.target for e in first_pass.train}
    assert targets[image_uri(run, 1)] == "Two dogs run on a beach."
    assert first_pass.stats.targets == {"caption_detailed": 5}


def test_several_captions_per_image_from_a_jsonl_manifest(tmp_path):
    captions = {
        "deart/a.jpg": [f"Angel {n} with a trumpet." for n in range(5)],
        "deart/b.jpg": ["A saint holding keys.", "Keys and a saint."],
        "deart/c.jpg": ["A crown of thorns."],
    }
    rows = [{"uri": uri, "caption": text} for uri, texts in captions.items() for text in texts]
    rows.append({"uri": "deart/c.jpg", "caption": None})
    rows.append({"uri": None, "caption": "An orphan caption."})
    manifest = write_jsonl(str(tmp_path / "deart.jsonl"), rows)

    split = load_examples(config(manifest, text_column="caption", validation_fraction=0.4))

    everything = split.train + split.validation
    assert {uri: [e.target for e in group] for uri, group in by_uri(everything).items()} == (
        captions
    )
    assert all(e.prompt == DETAILED for e in everything)
    assert split.stats.skipped == {"empty_caption": 1, "missing_uri": 1}
    # all captions of an image stay on one side
    assert not {e.group for e in split.train} & {e.group for e in split.validation}
    assert split.validation and split.train


def test_manifest_with_style_columns_and_repeated_rows(tmp_path):
    rows = [
        {"uri": "m/1.png", "caption_detailed": "First caption."},
        {"uri": "m/1.png", "caption_detailed": "Second caption."},
        {"uri": "m/2.png", "caption_detailed": "Third caption.", "extra": 1},
    ]
    manifest = write_jsonl(str(tmp_path / "m.jsonl"), rows)
    split = load_examples(config(manifest))
    assert [(e.image_uri, e.target) for e in split.train] == [
        ("m/1.png", "First caption."),
        ("m/1.png", "Second caption."),
        ("m/2.png", "Third caption."),
    ]


def test_max_examples_keeps_the_first_in_source_order(tmp_path):
    rows = [{"uri": f"m/{n}.png", "caption_detailed": f"Caption {n}."} for n in range(10)]
    manifest = write_jsonl(str(tmp_path / "m.jsonl"), rows)
    split = load_examples(config(manifest, max_examples=4))
    assert [e.target for e in split.train] == [f"Caption {n}." for n in range(4)]
    assert split.stats.skipped == {"beyond_max_examples": 6}


# --- museum QA --------------------------------------------------------------------------

ALL_QUESTIONS = {
    0: ["What floats?", "What colour?", "Who made it?"],
    1: ["How many dogs?"],
    2: [f"Coin question {n}?" for n in range(5)],
    3: ["What is shown?"],  # its blank answer is skipped
}


def qa_config(source: str, **fields) -> DataConfig:
    return config(source, kind="qa", **fields)


def questions_of(examples: list) -> dict[str, list[str]]:
    return {
        uri: [e.prompt.removeprefix("Question: ").removesuffix(" Answer:") for e in group]
        for uri, group in by_uri(examples).items()
    }


def test_qa_all_gives_every_question_every_epoch(run):
    cfg = qa_config(run)
    split = load_examples(cfg)
    expected = {image_uri(run, index): qs for index, qs in ALL_QUESTIONS.items()}
    for epoch in (0, 1, 7):
        assert questions_of(epoch_examples(split.train, cfg, epoch)) == expected
    boat = by_uri(split.train)[image_uri(run, 0)]
    assert [(e.prompt, e.target) for e in boat][:2] == [
        ("Question: What floats? Answer:", "A boat."),
        ("Question: What colour? Answer:", "Red."),
    ]
    assert split.stats.skipped == {"empty_answer": 1, "empty_qa": 2}
    assert split.stats.examples == 10


def test_qa_one_random_picks_one_question_per_image_per_epoch(run):
    cfg = qa_config(run, qa_sampling="one_random")
    train = load_examples(cfg).train
    coin = image_uri(run, 2)
    epochs = [epoch_examples(train, cfg, epoch) for epoch in range(12)]
    for examples in epochs:
        picked = questions_of(examples)
        assert set(picked) == {image_uri(run, index) for index in ALL_QUESTIONS}
        for index, questions in ALL_QUESTIONS.items():
            assert len(picked[image_uri(run, index)]) == 1
            assert picked[image_uri(run, index)][0] in questions
        # the answer travels with its own question
        assert all(e in train for e in examples)
    # reproducible per (seed, epoch), also from a freshly loaded split
    again = load_examples(qa_config(run, qa_sampling="one_random")).train
    assert [epoch_examples(again, cfg, epoch) for epoch in range(12)] == epochs
    # differs across epochs: the five-question image sees several of its questions
    assert len({questions_of(examples)[coin][0] for examples in epochs}) >= 3
    assert len({tuple(examples) for examples in epochs}) > 1
    # and another seed draws differently
    other = qa_config(run, qa_sampling="one_random", seed=1)
    assert [epoch_examples(train, other, epoch) for epoch in range(12)] != epochs


def test_one_random_covers_questions_evenly_over_many_images(tmp_path):
    rows = [
        {"uri": f"q/{n}.png", "qa": qa(*[(f"Q{k} of {n}?", f"A{k}.") for k in range(4)])}
        for n in range(400)
    ]
    source = write_jsonl(str(tmp_path / "qa.jsonl"), rows)
    cfg = qa_config(source, qa_sampling="one_random")
    train = load_examples(cfg).train
    picks = epoch_examples(train, cfg, 3)
    assert len(picks) == 400
    positions = [int(e.prompt.split("Q")[2][0]) for e in picks]  # "Question: Qk of n? ..."
    for k in range(4):
        assert 70 <= positions.count(k) <= 130  # 100 expected each


def test_qa_prompt_template_and_its_validation(tmp_path):
    source = write_jsonl(
        str(tmp_path / "qa.jsonl"),
        [{"uri": "a.png", "qa": [{"category": "medium", "question": "Oil?", "answer": "Yes."}]}],
    )
    cfg = qa_config(source, qa_prompt="[{category}] Q: {question}\nA:")
    assert load_examples(cfg).train == [
        SFTExample("a.png", "[medium] Q: Oil?\nA:", "Yes.", group="a.png")
    ]
    for bad in ("Q: {questoin}", "no field", "{question} {answer}", "{question"):
        with pytest.raises(ValidationError, match="qa_prompt"):
            qa_config(source, qa_prompt=bad)


# --- the split by image -----------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 17, 12345])
def test_split_never_puts_an_image_on_both_sides(seed, tmp_path):
    rows = [
        {"uri": f"s/{n}.png", "caption_detailed": f"Caption {k} of {n}."}
        for n in range(300)
        for k in range(1 + n % 3)  # 1 to 3 captions per image
    ]
    source = write_jsonl(str(tmp_path / "many.jsonl"), rows)
    split = load_examples(config(source, validation_fraction=0.2, seed=seed))

    train_images = {e.group for e in split.train}
    validation_images_ = {e.group for e in split.validation}
    assert not train_images & validation_images_
    assert train_images | validation_images_ == {f"s/{n}.png" for n in range(300)}
    assert len(split.train) + len(split.validation) == len(rows)
    assert 0.12 <= len(validation_images_) / 300 <= 0.28
    assert split.stats.validation_images == len(validation_images_)
    assert split.stats.train_examples == len(split.train)


def test_split_is_seeded_and_deterministic():
    images = [f"img/{n}.jpg" for n in range(2000)]
    first = validation_images(images, 0.1, seed=0)
    assert validation_images(reversed(images), 0.1, seed=0) == first
    assert validation_images(images, 0.1, seed=1) != first
    assert 150 <= len(first) <= 250
    # an image keeps its side when the dataset grows
    assert validation_images(images[:500], 0.1, seed=0) == first & set(images[:500])


@pytest.mark.parametrize("seed", range(20))
def test_tiny_sets_still_have_both_sides(seed):
    assert len(validation_images(["a", "b"], 0.01, seed)) == 1
    assert len(validation_images(["a", "b"], 0.99, seed)) == 1  # one image still trains
    assert len(validation_images(["a", "b", "c"], 0.05, seed)) == 1
    assert validation_images(["a"], 0.5, seed) == frozenset()
    assert validation_images(["a", "b", "c"], 0.0, seed) == frozenset()


def test_the_six_image_run_holds_out_at_least_one_image(run):
    for seed in range(5):
        split = load_examples(config(run, validation_fraction=0.05, seed=seed))
        held_out = {e.group for e in split.validation}
        assert len(held_out) >= 1
        assert not held_out & {e.group for e in split.train}


# --- preference pairs -------------------------------------------------------------------

TEMPLATE = "caption_detailed.v1"


def pair(uri: str, chosen: str, rejected: str, **fields) -> dict:
    return {
        "uri": uri,
        "prompt": load_prompt(TEMPLATE).render(),
        "prompt_template": TEMPLATE,
        "style": "detailed",
        "chosen": chosen,
        "rejected": rejected,
        "critic_score": 0.25,
        "run_id": "run-1",
        "review_id": f"r-{uri}",
        **fields,
    }


@pytest.mark.parametrize("where", ["local", "s3"])
def test_preference_pairs_from_a_review_import(where, request, tmp_path):
    rows = [
        pair("p/0.png", "A blue vase.", "A red vase."),
        pair("p/1.png", "Three ships.", "Two ships."),
        pair("p/2.png", "A  red vase.", "A red vase. "),  # same text: nothing to prefer
        pair("p/3.png", "", "A draft."),
        pair("p/4.png", "A horse.", "A cow.", prompt=""),
    ]
    root = str(tmp_path) if where == "local" else f"s3://{request.getfixturevalue('s3_bucket')}"
    source = uris.join(root, "review", "pairs.parquet")
    write_parquet(source, pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA))

    split = load_examples(DataConfig(kind="preference", source=source, validation_fraction=0))

    prompt = load_prompt(TEMPLATE).render()
    assert split.train == [
        PreferenceExample("p/0.png", prompt, "A blue vase.", "A red vase.", group="p/0.png"),
        PreferenceExample("p/1.png", prompt, "Three ships.", "Two ships.", group="p/1.png"),
        # an empty prompt falls back to rendering its template
        PreferenceExample("p/4.png", prompt, "A horse.", "A cow.", group="p/4.png"),
    ]
    assert split.stats.skipped == {"chosen_equals_rejected": 1, "empty_chosen": 1}


# --- errors -----------------------------------------------------------------------------


def test_a_source_without_a_usable_column_says_what_it_looked_for(tmp_path):
    source = str(tmp_path / "catalogue.parquet")
    write_parquet(source, pa.table({"uri": ["a.png"], "description": ["A vase."]}))

    with pytest.raises(ValueError, match=r"caption_detailed.*found \['uri', 'description'\]"):
        load_examples(config(source))
    with pytest.raises(ValueError, match=r"looked for columns \['uri', 'qa"):
        load_examples(qa_config(source))
    with pytest.raises(ValueError, match=r"looked for columns .*chosen"):
        load_examples(DataConfig(kind="preference", source=source))


def test_only_null_texts_is_an_error_with_the_skip_counts(tmp_path):
    source = write_jsonl(
        str(tmp_path / "empty.jsonl"),
        [{"uri": "a.png", "caption_detailed": None}, {"uri": "b.png", "caption_detailed": " "}],
    )
    with pytest.raises(ValueError, match=r"no usable rows.*2 empty_caption_detailed"):
        load_examples(config(source))


def test_a_style_the_run_never_wrote_is_named(run):
    with pytest.raises(ValueError, match=r"style 'formal_analysis'.*caption_formal_analysis"):
        load_examples(config(run, styles=["detailed", "formal_analysis"]))


def test_missing_sources_and_bad_json_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="captions/part-"):
        load_examples(config(str(tmp_path / "no-run")))
    with pytest.raises(FileNotFoundError, match="no Parquet file"):
        load_examples(config(str(tmp_path / "none.parquet")))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"uri": "a.png", "caption_detailed": "ok"}\n{not json\n')
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        load_examples(config(str(broken)))


def test_config_rejects_what_it_cannot_honour():
    with pytest.raises(ValidationError, match=r"styles \['sketch'\] have no prompt"):
        DataConfig(kind="caption", source="x", styles=["sketch"])
    with pytest.raises(ValidationError, match="unknown prompt"):
        DataConfig(kind="caption", source="x", prompts={"detailed": "no_such_prompt"})
    with pytest.raises(ValidationError, match="exactly one style"):
        DataConfig(kind="caption", source="x", styles=["detailed", "objective"], text_column="t")
    with pytest.raises(ValidationError, match="validation_fraction"):
        DataConfig(kind="caption", source="x", validation_fraction=1.0)
    with pytest.raises(ValidationError, match="extra"):
        DataConfig(kind="caption", source="x", epochs=3)
    # styles only matter to caption data
    assert DataConfig(kind="qa", source="x", styles=["sketch"]).styles == ["sketch"]
