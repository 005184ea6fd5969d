"""Face budgets written as text ("5000, 1000"), read in the add-on's Finish section for an answer in words before
anything is sent (standard library only). The syntax is the backend's for its ``lods`` finish setting
(comma-separated whole numbers, ``10_000`` allowed; a test holds the two together); whether a budget is possible
(positive, at most 8 LODs) is the backend's check, which names the setting; a budget at or above the surface's
faces keeps it whole there, and the done message says so."""

from __future__ import annotations

import re

WHOLE_NUMBER = re.compile(r"[+-]?\d+(_\d+)*")


def parse_face_budgets(text: str) -> list[int]:
    """'5000, 1000' -> [5000, 1000]: whole numbers separated by commas, blanks ignored; ValueError in plain words
    for anything else."""
    budgets = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not WHOLE_NUMBER.fullmatch(part):
            raise ValueError(f"LODs: '{part}' is not a face count; write whole numbers like 5000,1000")
        budgets.append(int(part))
    return budgets
