"""``iso3d-render``'s driver and worker processes as a user meets them: the driver killed alone or stopped with
SIGTERM (its workers die, the manifest is saved, a rerun resumes), an object over the time limit (its worker is
replaced), and Ray workers killed mid-object (the object is retried). Real subprocesses, real bpy workers."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

# bpy in this process: the objects fixture writes its textured GLB with Blender's exporter
pytestmark = [pytest.mark.blender, pytest.mark.integration]
pytest.importorskip("bpy")

from blender_addon.core.render_plan import expected_files  # noqa: E402
from tests.helpers.processes import alive, spawn  # noqa: E402
from tests.helpers.render_cli import SMALL, SMALL_SETTINGS, by_name, cli, run_cli  # noqa: E402
from tests.helpers.waiting import wait_until  # noqa: E402


def started_objects(out: Path) -> set[str]:
    """Objects with at least one view rendered into their staging folder (``.partial/<shard>/<object>.<pid>.<id>``)."""
    return {folder.name.split(".")[0] for folder in out.glob(".partial/*/*") if any(folder.glob("*.png"))}


def children_of(pid: int) -> list[int]:
    """Live child processes of ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found



def test_killing_the_driver_alone_stops_its_workers_and_a_rerun_completes_every_object(objects, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    count = 12  # enough that a quiet, fast machine cannot finish them all before the kill
    tetra = Path(objects["tetra"]).read_text()
    for k in range(count):
        (folder / f"object{k:02d}.obj").write_text(f"# copy {k}\n{tetra}")  # other content: other objects
    out = tmp_path / "out"
    args = cli() + [str(folder), "--out", str(out), "--workers", "1", "--no-progress", *SMALL]
    process = spawn(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # killed mid-way through an object: one is finished and the next has views in its staging folder
        wait_until(lambda: list(out.glob("object00-*/cameras.json"))
                   and [name for name in started_objects(out) if not name.startswith("object00-")],
                   600, "object00 finished and the next object started")
        workers = children_of(process.pid)
        assert workers, "the driver has no worker processes"
        os.kill(process.pid, signal.SIGKILL)  # the driver only, as `kill -9 <pid>` or an OOM kill would
        process.wait()
        # the kernel's parent-death signal is immediate; 30 s for a loaded machine
        wait_until(lambda: not any(alive(pid) for pid in workers), 30, "the render workers of the killed driver to die")
    finally:
        process.kill_group()
    finished = sorted(p for p in out.iterdir() if p.name.startswith("object"))
    assert 1 <= len(finished) < count
    for path in finished:  # everything that looks finished is complete
        assert sorted(os.listdir(path)) == sorted(expected_files(SMALL_SETTINGS))
    # A done folder damaged afterwards (a lost file) is found on resume and rendered again.
    damaged = finished[-1]
    (damaged / "random_001.png").unlink()
    kept_mtime = (finished[0] / "cameras.json").stat().st_mtime_ns
    result = run_cli(folder, "--out", out, "--workers", 1, *SMALL)
    assert result.returncode == 0, result.stderr
    assert f"{len(finished) - 1} already done (1 broken folder(s) removed)" in result.stderr
    assert f"{damaged.name} is incomplete (1 of {len(expected_files(SMALL_SETTINGS))} files missing" in result.stderr
    ids = sorted(p.name for p in out.iterdir() if p.name.startswith("object"))
    assert [i.rsplit("-", 1)[0] for i in ids] == [f"object{k:02d}" for k in range(count)]
    for object_id in ids:
        assert sorted(os.listdir(out / object_id)) == sorted(expected_files(SMALL_SETTINGS))
        json.loads((out / object_id / "cameras.json").read_text())
    if len(finished) > 1:
        assert (finished[0] / "cameras.json").stat().st_mtime_ns == kept_mtime  # not rendered twice
    assert sorted(json.loads((out / "manifest.json").read_text())["done"]) == ids
    assert not list((out / ".partial").rglob("*.*"))
    again = run_cli(folder, "--out", out, *SMALL)  # nothing left to do
    assert again.returncode == 0 and f"{count} already done" in again.stderr
    changed = run_cli(folder, "--out", out, "--resolution", 64)
    assert changed.returncode == 2 and "other settings" in changed.stderr


def test_sigterm_to_the_driver_stops_its_workers_and_saves_the_manifest(objects, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    tetra = Path(objects["tetra"]).read_text()
    for k in range(8):
        (folder / f"object{k:02d}.obj").write_text(f"# copy {k}\n{tetra}")
    out = tmp_path / "out"
    with spawn(cli() + [folder, "--out", out, "--workers", 1, "--no-progress", *SMALL], stdout=subprocess.DEVNULL,
               stderr=subprocess.PIPE, text=True) as process:
        wait_until(lambda: list(out.glob("object00-*/cameras.json")) and children_of(process.pid), 600,
                   "object00 finished")
        workers = children_of(process.pid)
        os.kill(process.pid, signal.SIGTERM)  # a scheduler's stop, to the driver only
        _, stderr = process.communicate(timeout=120)
        wait_until(lambda: not [pid for pid in workers if alive(pid)], 60, "the workers to exit")
    assert process.returncode == 143 and "interrupted; run the same command again to resume" in stderr
    finished = sorted(p.name for p in out.iterdir() if p.name.startswith("object"))
    assert finished and sorted(json.loads((out / "manifest.json").read_text())["done"]) == finished
    for name in finished:
        assert sorted(os.listdir(out / name)) == sorted(expected_files(SMALL_SETTINGS))


# slow: Blender workers waiting out a time limit (~10 s); the default run keeps the driver's kill and SIGTERM tests
@pytest.mark.slow
def test_objects_over_the_time_limit_fail_and_the_worker_is_replaced(objects, tmp_path):
    out = tmp_path / "out"
    started = time.monotonic()
    result = run_cli(objects["tetra"], objects["box"], "--out", out, "--workers", 1, "--time-limit", 2,
                     "--samples", 100000, "--resolution", 128, "--fixed-views", 1, "--random-views", 0)
    assert result.returncode == 1, result.stderr
    failed = json.loads((out / "manifest.json").read_text())["failed"]
    assert sorted(by_name(failed)) == ["box", "tetra"]
    assert all("timed out" in entry["reason"] for entry in failed.values())
    # two 2 s limits plus two worker starts (bpy imports: up to a minute each on a loaded 2-core machine); the
    # 100000-sample renders themselves would take far longer
    assert time.monotonic() - started < 300
    assert not [p for p in out.iterdir() if not p.name.startswith(".") and p.name != "manifest.json"]


@pytest.mark.integration
@pytest.mark.slow  # a local Ray instance takes 10-20 s to start on a loaded 2-core machine
def test_ray_renders_one_task_per_object_and_retries_an_object_whose_worker_was_killed(objects, tmp_path):
    pytest.importorskip("ray")
    folder = tmp_path / "objects"
    folder.mkdir()
    tetra = Path(objects["tetra"]).read_text()
    for k in range(3):
        (folder / f"object{k}.obj").write_text(f"# copy {k}\n{tetra}")
    out = tmp_path / "out"
    staging = out / ".partial" / "shard-00000-of-00001"
    args = cli() + [str(folder), "--out", str(out), "--no-progress", *SMALL, "--samples", "16",
                    "--ray", "--workers", "2", "--retries", "1"]
    with spawn(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as process:

        def kill_a_rendering_worker():
            for lock in staging.glob("*.lock") if staging.is_dir() else []:
                try:
                    pid = int(lock.read_text().split()[0])  # "<pid> <host>"
                except (OSError, ValueError, IndexError):
                    continue
                if pid and alive(pid):
                    os.kill(pid, signal.SIGKILL)  # a Ray worker, mid-object
                    return lock.name.split(".", 1)[0]
            if process.poll() is not None:
                raise AssertionError("the run ended before any object was seen rendering")
            return None

        # Ray's start and bpy's import in each worker on a loaded 2-core machine
        killed = wait_until(kill_a_rendering_worker, 600, "an object rendering in a Ray worker", poll=0.02)
        _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["failed"] and killed in manifest["done"]
    assert sorted(by_name(manifest["done"])) == ["object0", "object1", "object2"]
    for object_id in manifest["done"]:
        assert sorted(os.listdir(out / object_id)) == sorted(expected_files(SMALL_SETTINGS))
    assert not list(staging.iterdir())  # the killed attempt's staging folder and lock are gone
