"""One training run from start to end: a spec built into a trainer, run inside its run directory.

``run`` is the life of a run read top to bottom; ``build`` turns a resolved spec into a Trainer;
``signals`` maps Ctrl+C and SIGTERM to stop and force; ``training_process`` starts the training process
that the live monitor watches.
"""
