"""The run directory: the durable truth every view is rebuilt from.

``handle`` is the open directory every writer of a run writes through (never through a link,
owner-only); ``layout`` names its files and writes run.json and summary.json, which ``records``
reads back checked; ``checkpoints`` reads last.pt for a resume, checked against the log; ``lock`` tells a live run from
an ended one; ``eventlog`` writes and reads events.jsonl; ``digest`` is what its per-step and
per-sample lines add up to (the plot series), which ``digest_file`` saves beside it as digest.json
so views of a long run start from that; ``control`` is the live run's command
socket; ``state`` classifies a run; ``catalog`` finds and describes the runs under a folder;
``scan`` reads how far a run got for ``ls``; ``history`` and ``comparison`` are what ``export`` and ``compare`` show.
"""
