"""Helpers shared by the tests (not imported by the project itself)."""
