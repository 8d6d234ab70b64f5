"""Dedup's index: exact (sha256) and near (pHash) entries sharded across Ray actors.

`hamming` finds near hashes, `shard` is one shard's entries, `order` keeps decisions in
listing order, `service` runs the shards as actors and is what `DedupStage` talks to.
"""
