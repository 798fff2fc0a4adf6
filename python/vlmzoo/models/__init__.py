"""The torch modules over the C++ core (one base for every assembly), vlmzoo's own checkpoint format,
quantisation, and counts (info)."""
# Each assembly registers itself (vlmzoo.models.assembly.ASSEMBLIES): importing the package loads them all.
from vlmzoo.models import dual_encoder, model, multiway_encoder  # noqa: F401,E402
