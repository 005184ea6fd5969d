"""Output names for a command given several input images: ``{name}`` in ``--out`` is each image's file name without
its extension (``iso3d generate photos/*.png --out 'assets/{name}.glb'``). One image keeps ``--out`` as it is
(``{name}`` allowed there too); several need ``{name}``, and two images that would write one file are refused."""

from __future__ import annotations

from pathlib import Path

from backend.errors import UserError

NAME_FIELD = "{name}"


def output_paths(images: list[str], out: str | None, default_one: str, default_several: str,
                 suffixes: tuple[str, ...]) -> list[Path]:
    """Each image's output path (``--out`` = ``out``, None: the default for one image or for several), every one
    ending in one of ``suffixes`` (lower-case, with the dot); a UserError saying what is wrong otherwise."""
    pattern = out or (default_one if len(images) == 1 else default_several)
    if len(images) > 1 and NAME_FIELD not in pattern:
        raise UserError(f"--out {pattern}: with several images it needs {NAME_FIELD} (each image's file name without "
                        f"its extension), e.g. --out '{Path(default_several).name}'")
    paths, claimed = [], {}
    for image in images:
        path = Path(pattern.replace(NAME_FIELD, Path(image).stem))
        if path.suffix.lower() not in suffixes:
            raise UserError(f"--out {path}: the file must end in {', '.join(suffixes[:-1])} or {suffixes[-1]}"
                            if len(suffixes) > 1 else f"--out {path}: the file must end in {suffixes[0]}")
        key = str(path.resolve())
        if key in claimed:
            raise UserError(f"{claimed[key]} and {image} would both be written to {path}: rename one")
        claimed[key] = image
        paths.append(path)
    return paths


def run_label(number: int, total: int, out: Path) -> str:
    """The prefix of a run's progress and messages: ``[2/5] chair: `` among several, nothing for one."""
    return f"[{number}/{total}] {out.stem}: " if total > 1 else ""
