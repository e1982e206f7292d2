"""Independent reference implementations used by the tests (plain modules, not tests)."""
