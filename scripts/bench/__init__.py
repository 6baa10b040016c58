"""`make bench`: our API side by side with the alternatives, on loopback, in one run.

run.py drives the phases of phases.py against the targets of targets.py: ours and the
baselines of baselines.py, each on its own free port against one Redis server.
"""
