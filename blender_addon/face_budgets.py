"""Face budgets written as text ("5000, 1000"): the one parser of LOD lists, for ``iso3d export --lods`` and the
add-on's Finish section alike (standard library only). It reads the numbers; whether a budget is possible (positive,
not above the surface's faces) is the finishing options' check on the backend, which names the budget."""

from __future__ import annotations

import re

WHOLE_NUMBER = re.compile(r"[+-]?\d+")


def parse_face_budgets(text: str) -> list[int]:
    """'5000, 1000' -> [5000, 1000]: whole numbers separated by commas or semicolons, '_' allowed inside a number
    (10_000), blanks ignored; ValueError in plain words for anything else."""
    budgets = []
    for part in text.replace(";", ",").split(","):
        part = part.strip().replace("_", "")
        if not part:
            continue
        if not WHOLE_NUMBER.fullmatch(part):
            raise ValueError(f"LODs: '{part}' is not a face count; write whole numbers like 5000,1000")
        budgets.append(int(part))
    return budgets
