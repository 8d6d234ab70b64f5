"""Evaluation: captioning metrics, diversity, VQA scoring, hallucination and the HTML report.

Light to import: pycocoevalcap, rouge-score, nltk, matplotlib and the embedding/CLIP models
load inside the functions that use them.
"""
