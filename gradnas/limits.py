"""Bounds on what gradnas reads from a user's files and strings, checked as the input is read, so that a
hostile-but-fair input ends in one line, in bounded time, instead of a RecursionError, a MemoryError or minutes
of work: the size of a text, the nesting and item count of what it parses to, the width of its integers, the
nodes and cells of a genotype."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import GradnasError

MAX_TEXT_BYTES = 1 << 20   # a config file, a genotype file or text form
MAX_DEPTH = 16             # lists and mappings inside each other (a genotype JSON needs 5)
MAX_ITEMS = 100_000        # values in one parsed file, shared (aliased) ones counted each time they are reached
MAX_INT = 2 ** 63 - 1      # integers must fit the 64 bits that torch and NumPy hold them in
MAX_NODES = 64             # intermediate nodes of one genotype cell
MAX_CELLS = 100            # cells of a per-cell genotype, or of a network (--layers; 20 in the DARTS recipe)
MAX_IMAGE_SIDE = 4_096     # --image-size


def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of ``path`` (at most :data:`MAX_TEXT_BYTES`), or one line saying why not."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TEXT_BYTES + 1)
    except OSError as err:
        raise GradnasError(f"cannot read {what} {path}: {err.strerror or type(err).__name__}") from None
    if len(data) > MAX_TEXT_BYTES:
        raise GradnasError(f"{what} {path} is larger than {MAX_TEXT_BYTES >> 20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise GradnasError(f"{what} {path} is not UTF-8 text (byte {err.start})") from None


def check_text(text: str, what: str) -> str:
    if len(text) > MAX_TEXT_BYTES:
        raise GradnasError(f"{what} is longer than {MAX_TEXT_BYTES >> 20} MiB")
    return text


def check_parsed(value: Any, what: str) -> Any:
    """``value`` (parsed JSON, YAML or TOML) within the nesting, item and integer bounds; returned as it is."""
    stack, items = [(value, 0)], 0
    while stack:
        v, depth = stack.pop()
        items += 1
        if items > MAX_ITEMS:
            raise GradnasError(f"{what} holds more than {MAX_ITEMS:,} values")
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_INT:
            raise GradnasError(f"{what}: the integer {str(v)[:20]}... does not fit in 64 bits")
        if isinstance(v, (list, tuple, dict)):
            if depth >= MAX_DEPTH:
                raise GradnasError(f"{what} is nested more than {MAX_DEPTH} levels deep")
            stack += [(x, depth + 1) for x in (v.values() if isinstance(v, dict) else v)]
    return value


def check_sizes(layers: int, steps: int | None = None, image_size: int | None = None) -> None:
    """A network's shape within the bounds a run is checked against before anything is built."""
    for name, value, most in (("layers", layers, MAX_CELLS), ("steps", steps, MAX_NODES),
                              ("image_size", image_size, MAX_IMAGE_SIDE)):
        if value is not None and value > most:
            raise GradnasError(f"{name} must be at most {most:,}, got {value:,}")


def parse_error(err: BaseException, what: str) -> GradnasError:
    """The one line for a parser that gave up on a nesting or size beyond its own limits."""
    if isinstance(err, RecursionError):
        return GradnasError(f"{what} is nested too deeply to read (the limit is {MAX_DEPTH} levels)")
    return GradnasError(f"{what} is too large to read")
