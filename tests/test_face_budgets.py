"""Face-budget lists: the add-on's Finish section reads its LOD text with ``parse_face_budgets`` for an instant
answer in words; the backend reads the same text as the ``lods`` finish setting. Both must agree."""

import pytest

from backend.errors import SettingsError
from backend.finishing.pipeline import FinishOptions
from backend.settings import settings_from_dict
from blender_addon.core.face_budgets import parse_face_budgets

AGREED = [
    ("5000,1000", [5000, 1000]),
    (" 5000 , 1000 ", [5000, 1000]),
    ("10_000, 2_000", [10000, 2000]),
    ("", []),
    ("4000,", [4000]),
]


@pytest.mark.parametrize("text, budgets", AGREED)
def test_face_budget_lists(text, budgets):
    assert parse_face_budgets(text) == budgets
    assert list(settings_from_dict(FinishOptions(), {"lods": text}).lods) == budgets


@pytest.mark.parametrize("text, bad", [("1000, lots", "lots"), ("5k", "5k"), ("1.5", "1.5")])
def test_what_is_not_a_whole_number_is_refused_in_words_on_both_sides(text, bad):
    with pytest.raises(ValueError, match=f"'{bad}' is not a face count"):
        parse_face_budgets(text)
    with pytest.raises(SettingsError, match="lods"):
        settings_from_dict(FinishOptions(), {"lods": text}).validate()
