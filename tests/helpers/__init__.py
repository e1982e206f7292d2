"""Plain helper modules the tests and their subprocesses import (not tests)."""
