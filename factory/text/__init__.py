"""Text that models produce: parsing their messy output and judging the text's health.

`parse` turns model replies (lists, JSON, key-value lines, chatty prose) into typed
values; `health` flags captions that should not enter a dataset; `labels` holds the
museum QA categories and question dimensions the prompts are written for.
"""
