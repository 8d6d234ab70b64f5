import io
import random
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from factory.dedup.hamming import HammingIndex
from factory.dedup.order import ListingOrder
from factory.dedup.service import start_dedup_index, stop_dedup_index
from factory.dedup.shard import Entry, IndexShard
from factory.io.listing_spill import index_ranges
from factory.stages.dedup import DedupConfig, DedupStage
from factory.stages.fingerprint import FingerprintStage, perceptual_hash
from tests.helpers import listing


def picture(seed: int, size=(320, 240), quality=92) -> bytes:
    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        box = (x, y, x + rng.randrange(20, 160), y + rng.randrange(20, 120))
        draw.ellipse(box, fill=tuple(rng.randrange(256) for _ in range(3)))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def test_phash_survives_reencoding_and_resizing_but_separates_pictures():
    original = perceptual_hash(picture(1))
    reencoded = perceptual_hash(picture(1, quality=60))
    with Image.open(io.BytesIO(picture(1))) as image:
        buffer = io.BytesIO()
        image.resize((240, 180)).save(buffer, "PNG")
    resized = perceptual_hash(buffer.getvalue())
    others = [perceptual_hash(picture(seed)) for seed in range(2, 12)]
    assert (original ^ reencoded).bit_count() <= 4
    assert (original ^ resized).bit_count() <= 6
    assert min((original ^ other).bit_count() for other in others) > 12


def test_hamming_index_agrees_with_brute_force():
    rng = random.Random(7)
    stored = [rng.getrandbits(64) for _ in range(3000)]
    index = HammingIndex(threshold=7)
    for position, value in enumerate(stored):
        index.add(value, str(position))
    for trial in range(300):
        base = stored[rng.randrange(len(stored))]
        flips = rng.sample(range(64), rng.randrange(0, 11))
        query = base ^ sum(1 << bit for bit in flips) if trial % 3 else rng.getrandbits(64)
        distances = [(query ^ value).bit_count() for value in stored]
        best = min(distances)
        found = index.nearest(query)
        if best > 7:
            assert found is None
        else:
            assert found is not None and found[1] == best


def dedup_input(images: list[bytes], names: list[str]) -> pa.Table:
    import hashlib

    table = listing(names)
    table = table.append_column("image", pa.array(images, pa.binary()))
    shas = [hashlib.sha256(image).hexdigest() for image in images]
    table = table.append_column("content_sha256", pa.array(shas))
    return FingerprintStage(DedupConfig())(table)


def test_first_occurrence_kept_exact_and_near_marked():
    a, b = picture(1), picture(2)
    near_a = picture(1, quality=55)
    table = dedup_input([a, b, a, near_a], ["a.jpg", "b.jpg", "a-copy.jpg", "a-small.jpg"])
    out = DedupStage(DedupConfig())(table)
    assert out.column("status").to_pylist() == ["ok", "ok", "duplicate", "duplicate"]
    assert out.column("duplicate_of").to_pylist() == [None, None, "a.jpg", "a.jpg"]
    assert out.column("duplicate_kind").to_pylist() == [None, None, "exact", "near"]


def test_modes_can_be_switched_off():
    a = picture(1)
    table = dedup_input([a, a, picture(1, quality=55)], ["a", "b", "c"])
    exact_only = DedupStage(DedupConfig(near=False))(table)
    assert exact_only.column("status").to_pylist() == ["ok", "duplicate", "ok"]
    nothing = DedupStage(DedupConfig(near=False, exact=False))(table)
    assert nothing.column("status").to_pylist() == ["ok", "ok", "ok"]


def test_state_spans_batches_like_one_actor_sees_them():
    stage = DedupStage(DedupConfig())
    first = stage(dedup_input([picture(3)], ["x"]))
    second = stage(dedup_input([picture(3)], ["y"]))
    assert first.column("status").to_pylist() == ["ok"]
    assert second.column("duplicate_of").to_pylist() == ["x"]


def test_embedding_mode_catches_what_phash_misses():
    a, b, c = picture(1), picture(2), picture(3)
    table = dedup_input([a, b, c], ["a", "b", "c"])
    unit = [[1.0, 0.0], [0.6, 0.8], [0.995, 0.0998]]
    table = table.append_column("embedding", pa.array(unit, pa.list_(pa.float32())))
    out = DedupStage(DedupConfig(embedding_similarity=0.98))(table)
    assert out.column("status").to_pylist() == ["ok", "ok", "duplicate"]
    assert out.column("duplicate_of").to_pylist() == [None, None, "a"]
    plain = DedupStage(DedupConfig())(table)
    assert plain.column("status").to_pylist() == ["ok", "ok", "ok"]


def test_shards_together_answer_like_one_index_and_split_its_entries():
    rng = random.Random(11)
    stored = [
        Entry(f"u{i}", f"{rng.getrandbits(256):064x}", rng.getrandbits(64)) for i in range(4000)
    ]
    whole = IndexShard(threshold=6)
    shards = [IndexShard(threshold=6, shard=s, shards=4) for s in range(4)]
    for index in [whole, *shards]:
        index.add(stored)
    queries = []
    for trial in range(300):
        base = stored[rng.randrange(len(stored))]
        flips = sum(1 << bit for bit in rng.sample(range(64), rng.randrange(0, 10)))
        sha = base.sha if trial % 4 == 0 else f"{rng.getrandbits(256):064x}"
        queries.append(Entry(f"q{trial}", sha, base.phash ^ flips))
    expected = whole.query(queries)
    answers = [shard.query(queries) for shard in shards]
    for position, want in enumerate(expected):
        found = [shard[position] for shard in answers]
        assert next((a.exact for a in found if a.exact), None) == want.exact
        near = [a.near[1] for a in found if a.near is not None]
        assert (min(near) if near else None) == (want.near[1] if want.near else None)
    entries = [shard.stats() for shard in shards]
    assert sum(s["band_entries"] for s in entries) == 4 * len(stored)
    assert sum(s["exact_entries"] for s in entries) == len(stored)
    assert max(s["band_entries"] for s in entries) < 0.3 * 4 * len(stored)  # ~1/4 each


def test_listing_order_waits_for_every_earlier_index_across_gaps():
    order = ListingOrder([(0, 4), (10, 12)])  # 4..9 written by an earlier run
    order.commit([10, 11])  # a later batch committing first moves nothing
    assert order.ready(0) and not order.ready(2) and not order.ready(10)
    order.commit([0, 1])
    assert order.ready(2) and not order.ready(10)
    order.commit([2, 3])  # the gap is stepped over, and the early commit counted
    assert order.next is None and order.ready(10) and order.ready(99)
    order.commit([2, 3])  # a retried batch changes nothing
    assert order.next is None
    assert index_ranges(np.array([0, 1, 2, 7, 9, 10])) == [(0, 3), (7, 8), (9, 11)]


def _remote_dedup(config: DedupConfig, index: str):
    import ray

    @ray.remote(num_cpus=0)
    def run(table: pa.Table) -> list:
        out = DedupStage(config, index=index)(table)
        status, of = out.column("status").to_pylist(), out.column("duplicate_of").to_pylist()
        return list(zip(status, of, strict=True))

    return run


def _batch(images: list[bytes], names: list[str], first: int) -> pa.Table:
    table = dedup_input(images, names)
    indexes = pa.array(range(first, first + len(names)), pa.int64())
    return table.set_column(table.column_names.index("input_index"), "input_index", indexes)


def test_a_later_batch_that_arrives_first_waits_and_the_first_occurrence_is_kept(ray_local):
    import ray

    config = DedupConfig(shards=3)
    index = f"test-dedup-{uuid.uuid4().hex[:8]}"
    handles = start_dedup_index(config, index, None, [(0, 2), (5, 7)])
    try:
        run = _remote_dedup(config, index)
        a, b = picture(1), picture(2)
        later = run.remote(_batch([a, picture(1, quality=55)], ["a-copy", "a-small"], 5))
        earlier = run.remote(_batch([a, b], ["a", "b"], 0))
        assert ray.get(earlier) == [("ok", None), ("ok", None)]
        assert ray.get(later) == [("duplicate", "a"), ("duplicate", "a")]
        stats = ray.get([handle.stats.remote() for handle in handles])
        assert sum(s["exact_entries"] for s in stats) == 2  # hashes of a and b, nothing else
    finally:
        stop_dedup_index(handles)


def test_shards_seed_from_the_images_already_written(tmp_path, ray_local):
    import ray

    original = picture(4)
    written = dedup_input([original], ["old.jpg"]).select(["uri", "content_sha256", "phash"])
    (tmp_path / "captions").mkdir()
    pq.write_table(written, tmp_path / "captions" / "part-0.parquet")
    config = DedupConfig(shards=2)
    index = f"test-dedup-{uuid.uuid4().hex[:8]}"
    handles = start_dedup_index(config, index, str(tmp_path), [(0, 2)])
    try:
        new = _batch([picture(4, quality=55), picture(5)], ["again.jpg", "new.jpg"], 0)
        assert ray.get(_remote_dedup(config, index).remote(new)) == [
            ("duplicate", "old.jpg"),
            ("ok", None),
        ]
        assert sum(ray.get(handle.stats.remote())["seeded"] for handle in handles) == 2
    finally:
        stop_dedup_index(handles)


def test_a_run_keeps_each_first_occurrence_through_sharded_parallel_dedup(tmp_path, ray_local):
    from factory.io.outputs import read_output
    from factory.run_config import load_run_config
    from factory.runner import run_caption

    source = tmp_path / "in"
    source.mkdir()
    for seed in range(12):
        (source / f"a{seed:02d}.jpg").write_bytes(picture(seed))
    for seed in range(12):  # later in listing order: copies, exact and re-encoded
        copy = picture(seed) if seed % 2 else picture(seed, quality=55)
        (source / f"b{seed:02d}.jpg").write_bytes(copy)
    overrides = ["caption=null", "ocr=null", "health=null", "knowledge=null"]
    overrides += ["ray.rows_per_block=2", "dedup.resources.batch_size=2", "dedup.shards=3"]
    config = load_run_config(None, [f"input={source}", f"output={tmp_path / 'out'}", *overrides])
    result = run_caption(config)
    assert (result.counts.accepted, result.counts.duplicates) == (12, 12)
    duplicates = read_output(str(tmp_path / "out"), "duplicates").to_pylist()
    pairs = {(r["uri"].rsplit("/", 1)[1], r["duplicate_of"].rsplit("/", 1)[1]) for r in duplicates}
    assert pairs == {(f"b{seed:02d}.jpg", f"a{seed:02d}.jpg") for seed in range(12)}
    kinds = {r["uri"].rsplit("/", 1)[1]: r["kind"] for r in duplicates}
    assert kinds["b01.jpg"] == "exact" and kinds["b00.jpg"] == "near"
