"""The learned parts of a block: projection P, tight frame A, classifier."""
