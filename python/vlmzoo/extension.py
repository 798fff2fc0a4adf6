"""The C++ core, `vlmzoo._C`, for the Python layers: a leaf below all of them. The layers import it from
here because import-linter reads .py files only, and would read `from vlmzoo import _C` as an import of
the package vlmzoo (whose __init__ imports every layer), drawing a circle that is not there."""
import importlib

import torch  # noqa: F401  (libtorch is loaded before the extension)

_C = importlib.import_module("vlmzoo._C")
