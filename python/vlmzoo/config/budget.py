"""A training budget, in optimizer steps or training FLOPs."""
from __future__ import annotations

import re


def parse_budget(budget: int | str, flops_per_step: float | None = None) -> int:
    """Optimizer steps for a budget: 300, "300", "300steps", or "2e12flops" (needs flops_per_step)."""
    if isinstance(budget, bool):
        raise ValueError(f"budget must be steps or FLOPs, got {budget!r}")
    if isinstance(budget, int):
        steps = budget
    else:
        match = re.fullmatch(r"\s*([0-9.eE+]+)\s*(steps?|flops?)?\s*", str(budget).lower())
        if not match:
            raise ValueError(f"budget {budget!r}: expected steps (300, '300steps') or FLOPs ('2e12flops')")
        try:
            value = float(match.group(1))
        except ValueError:
            raise ValueError(f"budget {budget!r}: {match.group(1)!r} is not a number") from None
        if (match.group(2) or "steps").startswith("flop"):
            if flops_per_step is None:
                raise ValueError(f"budget {budget!r} is in FLOPs; FLOPs per step are needed to convert it")
            steps = int(value // flops_per_step)
        else:
            steps = int(value)
    if steps < 1:
        raise ValueError(f"budget {budget!r} buys {steps} optimizer steps; it must buy at least 1")
    return steps
