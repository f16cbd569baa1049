"""Argument parsers for each `hermes` command; implementations are imported lazily."""
