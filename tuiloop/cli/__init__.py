"""The ``tuiloop`` command line: ``main`` parses it; one module per subcommand does the work."""

from tuiloop.cli.main import main

__all__ = ["main"]
