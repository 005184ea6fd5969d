"""Where a command will write is checked before its work (``backend.errors.check_writable``): an output it cannot
write is one line and exit code 2 at once, not a traceback after the work; a file system that fails later is one
line too (``run_command``: exit code 1). Root writes anywhere permissions allow nothing, so the places that cannot
be written here are under a file ("Not a directory"), which stops every user."""

from __future__ import annotations

import errno

import pytest

from backend.cli import main as iso3d
from backend.errors import UserError, check_writable, run_command
from blender_addon.core.atomic_files import PARTIAL_SUFFIX
from tests.helpers import object_files
from tests.helpers.command_output import files_under, one_line_error
from tests.helpers.paths import EXAMPLE_IMAGE
from training.render_cli import main as iso3d_render
from training.train_cli import main as iso3d_train


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a file"
    path.write_text("not a folder")
    return path


def test_a_writable_place_passes_and_is_left_as_it_was(tmp_path):
    (tmp_path / "kept").mkdir()
    before = files_under(tmp_path)
    assert check_writable(tmp_path / "kept" / "views.png", "--out") == tmp_path / "kept" / "views.png"
    assert check_writable(tmp_path / "new" / "deeper" / "asset.glb", "--out").name == "asset.glb"
    check_writable(tmp_path / "runs" / "stage1", "--out", folder=True)
    assert files_under(tmp_path) == before  # the probe and the folders made for it are gone again
    assert not any(name.endswith(PARTIAL_SUFFIX) for name in files_under(tmp_path))


def test_places_that_cannot_be_written_say_why(tmp_path, a_file):
    with pytest.raises(UserError, match=r"^--out .*a file/out/views\.png: cannot be written there \(Not a directory\)$"):
        check_writable(a_file / "out" / "views.png", "--out")
    with pytest.raises(UserError, match=r"^--out .*a file: exists and is not a folder$"):
        check_writable(a_file, "--out", folder=True)
    with pytest.raises(UserError, match=r"^--out .*: is a folder; give a file name$"):
        check_writable(tmp_path, "--out")
    assert files_under(tmp_path) == ["a file"]


def test_a_file_system_that_fails_during_a_command_is_one_line(capsys):
    def run():
        raise OSError(errno.ENOSPC, "No space left on device", "/data/asset.job/checkpoint.pt")

    assert run_command("iso3d", run) == 1
    assert capsys.readouterr().err == "iso3d: error: No space left on device (/data/asset.job/checkpoint.pt)\n"


def test_preview_checks_its_output_before_loading_a_model(a_file, capsys):
    assert iso3d(["preview", str(EXAMPLE_IMAGE), "--model", "tiny", "--out", str(a_file / "views.png")]) == 2
    one_line_error(capsys, "iso3d", "--out", "cannot be written there (Not a directory)")


@pytest.mark.parametrize("option", ["--out", "--workdir"])
def test_generate_checks_its_output_and_work_folder_before_the_run(tmp_path, a_file, capsys, option):
    paths = {"--out": str(tmp_path / "asset.glb"), "--workdir": str(tmp_path / "asset.job")}
    paths[option] = str(a_file / ("asset.glb" if option == "--out" else "asset.job"))
    assert iso3d(["generate", str(EXAMPLE_IMAGE), "--model", "tiny", "--device", "cpu", "--preset", "tiny", "--quiet",
                  "--out", paths["--out"], "--workdir", paths["--workdir"]]) == 2
    one_line_error(capsys, "iso3d generate", option, "cannot be written there (Not a directory)")
    assert files_under(tmp_path) == ["a file"]  # no work folder, no output


def test_export_checks_its_output_folder(tmp_path, a_file, capsys):
    (tmp_path / "asset.job").mkdir()
    assert iso3d(["export", str(tmp_path / "asset.job"), "--out", str(a_file / "finished")]) == 2
    one_line_error(capsys, "iso3d export", "--out", "cannot be written there (Not a directory)")


def test_training_commands_check_their_output_folders(tmp_path, a_file, capsys):
    assert iso3d_train(["stage1", "--model", "tiny", "--init", str(tmp_path / "init.safetensors"), "--data",
                        str(tmp_path), "--out", str(a_file / "run")]) == 2
    one_line_error(capsys, "iso3d-train", "--out", "cannot be written there (Not a directory)")
    object_files.write_obj(tmp_path / "ok.obj", object_files.TETRA_VERTICES, object_files.TETRA_FACES)
    assert iso3d_render([str(tmp_path / "ok.obj"), "--out", str(a_file / "renders")]) == 2
    one_line_error(capsys, "iso3d-render", "--out", "cannot be written there (Not a directory)")
