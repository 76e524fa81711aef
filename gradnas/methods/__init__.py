"""Method presets: each module registers its published defaults in ``config.PRESETS``.

A preset is data: a function of the search space returning the options it sets. Importing this package
registers them all.
"""
from . import betadarts, dnas, gdarts, isdarts, pcdarts  # noqa: F401
