"""reidkit: person re-identification with representation and metric learning."""

__version__ = "0.1.0"
