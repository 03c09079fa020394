"""Blob commands (placeholder until written)."""

from typing import Any


def add_parsers(sub: Any) -> None:
    return None
