"""The run directory: the durable truth every view is rebuilt from.

``layout`` names its files and writes run.json and summary.json; ``lock`` tells a live run from
an ended one; ``eventlog`` writes and reads events.jsonl; ``control`` is the live run's command
socket; ``state`` classifies a run; ``catalog`` finds and describes the runs under a folder.
"""
