"""bench.source.source_commit names the code a benchmark ran: the commit, marked dirty where tracked files differ."""

from __future__ import annotations

import subprocess

import pytest

from bench.source import source_commit

pytestmark = pytest.mark.integration  # runs git


def git(root, *arguments: str) -> str:
    return subprocess.run(["git", *arguments], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def test_the_commit_and_whether_the_tree_differs_from_it(tmp_path):
    assert source_commit(tmp_path) is None  # not a checkout
    git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git(tmp_path, "add", "code.py")
    git(tmp_path, "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "commit", "-q", "-m", "one")
    head = git(tmp_path, "rev-parse", "--short=7", "HEAD")
    assert source_commit(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")  # the tree no longer what the commit holds
    assert source_commit(tmp_path) == f"{head}-dirty"
    (tmp_path / "notes.txt").write_text("untracked\n")  # untracked files do not make it dirty
    (tmp_path / "code.py").write_text("x = 1\n")
    assert source_commit(tmp_path) == head
