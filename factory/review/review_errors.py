"""Errors of the review queue; all are ValueErrors so the CLI reports them in one line."""

from __future__ import annotations


class ReviewError(ValueError):
    """Something about a run or a review folder that the user has to fix."""


class NothingToReview(ReviewError):  # noqa: N818 - a state, not a crash
    """The run has no caption the critic scored (or none under the score limit)."""


class FolderNotEmpty(ReviewError):  # noqa: N818 - a state, not a crash
    """An export would replace files in a folder that may hold a reviewer's edits."""


class MalformedReview(ReviewError):
    """A review file line or row that cannot be read; the message names file and line."""
