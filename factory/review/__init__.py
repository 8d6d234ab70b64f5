"""The human review queue: the captions the critic liked least, corrected by people.

    factory review export --run RUN --to REVIEW     the N lowest critic scores, with their
                                                    images, facts and verdicts
    (a person fills `corrected_caption` in REVIEW/review.jsonl or review.csv)
    factory review import --review REVIEW --out pairs.parquet
                                                    preference pairs for DPO training:
                                                    chosen = corrected, rejected = draft

`export.export_review` and `importer.import_review` are the library API; `items` is the
review file format both of them speak. This module stays import-light: the CLI parser
reads the default below without loading pyarrow.dataset.
"""

DEFAULT_COUNT = 50
