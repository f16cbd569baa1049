"""hermes-container: many Hermes agent profiles in one s6-supervised container."""

__version__ = "0.1.0"
