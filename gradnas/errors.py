"""The one exception type gradnas raises for bad user input; the CLI prints it as a single line."""


class GradnasError(Exception):
    """Bad input: an unknown name, a malformed genotype, missing data, a corrupt checkpoint, a NaN loss."""


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type when it has none), for a one-line error."""
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:limit]
