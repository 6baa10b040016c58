"""`make bench`: our API against the alternatives (run.py drives phases.py over targets.py)."""
