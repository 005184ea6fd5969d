"""`iso3d generate` and `iso3d preview` with several images: one process, the model loaded (and compiled) once,
each image to its own output (and work folder); every input is checked before the first run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest

from backend.cli import main as iso3d
from tests.helpers.command_output import files_under, one_line_error
from tests.helpers.paths import EXAMPLE_IMAGE, REPO_ROOT
from tests.helpers.processes import python, spawn
from tests.helpers.waiting import wait_until

# CPU-sized runs: this checks the command's files and messages, not the meshes
SMALL = ("--model", "tiny", "--device", "cpu", "--preset", "tiny", "--quiet", "--steps", "1",
         "--phases.resolution_before", "24", "--phases.resolution_after", "24", "--mesh.resolution", "32",
         "--mesh.density_threshold", "2", "--run.turntable_views", "2", "--run.views_resolution", "24")


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chair.png", "lamp.png"):
        shutil.copyfile(EXAMPLE_IMAGE, folder / name)
    return folder


@pytest.mark.integration  # a real `iso3d generate` process and a real SIGINT
def test_ctrl_c_stops_the_run_going_on_and_the_ones_after_it(tmp_path, images):
    out = tmp_path / "assets" / "{name}.glb"
    arguments = [*SMALL[:-2], "--steps", "5000"]  # long enough that the first run is still going when Ctrl-C comes
    command = python("-m", "backend.cli", "generate", images / "chair.png", images / "lamp.png", "--out", out, *arguments)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO_ROOT))
    with spawn(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT) as child:
        # the first run has begun (its settings are written at its start, after the Ctrl-C handler is in place)
        wait_until(lambda: (tmp_path / "assets" / "chair.job" / "config.json").exists() or child.poll() is not None,
                   timeout=600, what="the first run's start")
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=600)
    assert child.returncode == 1, stderr
    assert "[1/2] chair: cancelled" in stderr and f"resume with: iso3d generate --resume {tmp_path}" in stderr
    assert (tmp_path / "assets" / "chair.job" / "checkpoint.pt").is_file()  # the cancelled run can resume
    assert stdout.strip().splitlines()[-1] == (f"0 of 2 written; interrupted: {tmp_path}/assets/chair.glb; "
                                               f"not run: {tmp_path}/assets/lamp.glb")
    assert not (tmp_path / "assets" / "lamp.job").exists() and not (tmp_path / "assets" / "chair.glb").exists()


# slow: two tiny runs in one process (~5 s); .ci/run runs it with the slow tests
@pytest.mark.slow
def test_several_images_run_in_one_process_each_to_its_own_files(tmp_path, images, capsys):
    out = tmp_path / "assets" / "{name}.obj"
    assert iso3d(["generate", str(images / "chair.png"), str(images / "lamp.png"), "--out", str(out), *SMALL]) == 0
    for name in ("chair", "lamp"):
        assert (tmp_path / "assets" / f"{name}.obj").is_file()
        assert (tmp_path / "assets" / f"{name}_turntable.png").is_file()
        assert (tmp_path / "assets" / f"{name}.job" / "checkpoint.pt").is_file()
    captured = capsys.readouterr()
    assert captured.err.count("is untrained") == 1  # the model was loaded once, for both runs
    lines = captured.out.strip().splitlines()
    assert lines[0].startswith("[1/2] chair: wrote ") and lines[1].startswith("[2/2] lamp: wrote ")
    assert lines[-1] == "2 of 2 written"


@pytest.mark.parametrize("arguments, message", [
    (["photos/chair.png", "photos/lamp.png", "--out", "assets/one.glb"],
     "--out assets/one.glb: with several images it needs {name}"),
    (["photos/chair.png", "photos/lamp.png", "--workdir", "work"], "--workdir is one run's folder"),
    (["photos/chair.png", "other/chair.png", "--out", "assets/{name}.glb"],
     "photos/chair.png and other/chair.png would both be written to assets/chair.glb: rename one"),
    (["photos/chair.png", "photos/missing.png"], "image photos/missing.png does not exist"),
    (["photos/chair.png", "photos/lamp.png", "--out", "assets/{name}.fbx"],
     "--out assets/chair.fbx: the file must end in .glb, .obj or .ply"),
    (["photos/chair.png", "--resume", "chair.job"], "give no IMAGE with it"),
    (["--resume", "chair.job", "--out", "{name}.glb"], "a resumed run has no image"),
    (["photos/chair.png", "photos/lamp.png", "--out", "taken/{name}.glb"],
     "the turntable image taken/lamp_turntable.png: is a folder; give a file name"),
])
def test_a_batch_that_cannot_run_whole_is_refused_before_any_run(tmp_path, images, capsys, monkeypatch, arguments,
                                                                message):
    (tmp_path / "other").mkdir()
    shutil.copyfile(EXAMPLE_IMAGE, tmp_path / "other" / "chair.png")
    (tmp_path / "taken" / "lamp_turntable.png").mkdir(parents=True)  # a folder where a run's turntable would go
    monkeypatch.chdir(tmp_path)
    before = files_under(tmp_path)
    assert iso3d(["generate", *arguments, "--model", "tiny", "--device", "cpu"]) == 2
    one_line_error(capsys, "iso3d generate", message)
    assert files_under(tmp_path) == before  # no output, no work folder


def test_several_previews_load_the_model_once(tmp_path, images, capsys):
    out = tmp_path / "previews" / "{name}.png"
    assert iso3d(["preview", str(images / "chair.png"), str(images / "lamp.png"), "--out", str(out), "--model", "tiny",
                  "--steps", "1", "--views", "1", "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "previews").iterdir()) == ["chair.png", "lamp.png"]
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("[1/2] chair: wrote ") and "loading" in lines[0]
    assert lines[1].startswith("[2/2] lamp: wrote ") and "loading" not in lines[1]  # loaded once, for both


@pytest.mark.parametrize("arguments, message", [
    (["photos/chair.png", "photos/lamp.png", "--out", "one.png"], "--out one.png: with several images it needs {name}"),
    (["photos/chair.png", "other/chair.png"],
     "photos/chair.png and other/chair.png would both be written to previews/chair.png: rename one"),
    (["photos/chair.png", "photos/missing.png"], "image photos/missing.png does not exist"),
    (["photos/chair.png", "--out", "views.jpg"], "--out views.jpg: the file must end in .png"),
])
def test_previews_that_cannot_all_run_are_refused_before_the_model_loads(tmp_path, images, capsys, monkeypatch,
                                                                         arguments, message):
    (tmp_path / "other").mkdir()
    shutil.copyfile(EXAMPLE_IMAGE, tmp_path / "other" / "chair.png")
    monkeypatch.chdir(tmp_path)
    before = files_under(tmp_path)
    assert iso3d(["preview", *arguments, "--model", "tiny"]) == 2
    one_line_error(capsys, "iso3d", message)
    assert files_under(tmp_path) == before
