"""Integration tests: an in-process server on a free port, through the generated stubs."""
