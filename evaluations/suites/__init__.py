"""Suite files: the schema (:mod:`.schema`), validation with file:line errors (:mod:`.load`, :mod:`.entries`,
:mod:`.defenses`), the expansion into cells (:mod:`.suite`), and the shipped TOML files."""

from advbridge.evaluations.suites.load import load_suite
from advbridge.evaluations.suites.schema import SuiteError
from advbridge.evaluations.suites.suite import Cell, EstimatorCell, Suite

__all__ = ["Cell", "EstimatorCell", "Suite", "SuiteError", "load_suite"]
