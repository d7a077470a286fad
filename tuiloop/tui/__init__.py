"""The live monitor: a Textual view of a run directory (it never imports torch)."""
