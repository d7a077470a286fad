"""The TOML spec: loading, validation, target resolution."""

from tuiloop.spec.errors import SpecError
from tuiloop.spec.load import load_spec, parse_spec
from tuiloop.spec.resolve import Resolved, resolve
from tuiloop.spec.schema import Spec

__all__ = ["Resolved", "Spec", "SpecError", "load_spec", "parse_spec", "resolve"]
