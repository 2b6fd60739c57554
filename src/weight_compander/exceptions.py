"""Warnings of the library (errors are plain ``ValueError`` / ``TypeError``)."""


class CompanderWarning(UserWarning):
    """Companding changed something the user should know about (e.g. a raised limit)."""
