"""tuiloop inside the training loops of other libraries: each module imports its library, which
nothing else in tuiloop does (``tuiloop.integrations.transformers``: the Hugging Face Trainer;
``tuiloop.integrations.lightning``: Lightning's Trainer)."""
