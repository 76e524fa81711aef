"""The one exception type gradnas raises for bad user input; the CLI prints it as a single line."""


class GradnasError(Exception):
    """Bad input: an unknown name, a malformed genotype, missing data, a corrupt checkpoint, a NaN loss."""
