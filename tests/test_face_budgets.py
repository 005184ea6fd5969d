"""The one parser of face-budget lists (``iso3d export --lods`` and the add-on's Finish section)."""

import argparse

import pytest

from backend.commands.export import add_finishing_arguments
from blender_addon.face_budgets import parse_face_budgets


@pytest.mark.parametrize("text, budgets", [
    ("5000,1000", [5000, 1000]),
    (" 5000 , 1000 ", [5000, 1000]),
    ("5000;1000", [5000, 1000]),
    ("10_000, 2_000", [10000, 2000]),
    ("", []),
    (" , ", []),
    ("2000,-5", [2000, -5]),  # read as written: the backend's finishing options refuse -5 by name
])
def test_face_budget_lists(text, budgets):
    assert parse_face_budgets(text) == budgets


@pytest.mark.parametrize("text, bad", [("1000, lots", "lots"), ("5k", "5k"), ("1.5", "1.5"), ("1e3", "1e3")])
def test_what_is_not_a_whole_number_is_refused_in_words(text, bad):
    with pytest.raises(ValueError, match=f"'{bad}' is not a face count"):
        parse_face_budgets(text)


def test_the_command_line_reads_lods_with_the_same_parser():
    parser = argparse.ArgumentParser()
    add_finishing_arguments(parser)
    assert parser.parse_args(["--lods", "10_000; 2000"]).lods == (10000, 2000)
