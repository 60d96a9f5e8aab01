"""Tests for Journey."""
