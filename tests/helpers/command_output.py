"""What a command left behind, as the CLI tests read it: its one-line error, the files under a folder."""

from __future__ import annotations

from pathlib import Path


def one_line_error(capsys, program: str, *fragments: str) -> str:
    """The one line a command printed on stderr, which starts with ``PROGRAM: error: `` and holds ``fragments``."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{program}: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def files_under(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, as sorted relative paths (what a command made or left)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
