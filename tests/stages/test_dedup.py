import io
import random

import pyarrow as pa
from PIL import Image, ImageDraw

from factory.stages.dedup import (
    DedupConfig,
    DedupStage,
    FingerprintStage,
    HammingIndex,
    perceptual_hash,
)
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
