"""Unit tests: pure code, no server."""
