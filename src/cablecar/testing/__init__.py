"""Helpers for testing applications built on cablecar."""
