"""What a training run reports (main process only): ``metrics.jsonl`` (one JSON line per optimizer step:
step, loss, learning rate, target views, samples/s), TensorBoard scalars when ``tensorboard`` is installed, a
progress bar on the terminal, and one-line messages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from blender_addon.core.atomic_files import write_text_atomically

METRICS_FILE = "metrics.jsonl"


def _tensorboard_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(folder))


class RunLog:
    def __init__(self, out_dir: Path, start_step: int, total_steps: int, enabled: bool = True, progress: bool = True):
        self.enabled = enabled
        self.metrics_path = Path(out_dir) / METRICS_FILE
        self.writer = None
        self.bar = None
        if not enabled:
            return
        self._drop_entries_after(start_step)
        self.metrics = self.metrics_path.open("a", encoding="utf-8")
        self.writer = _tensorboard_writer(Path(out_dir) / "tensorboard")
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, file=sys.stderr)

    def _drop_entries_after(self, step: int) -> None:
        """A resumed run repeats the steps after its checkpoint: earlier lines for them are dropped."""
        if not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", step) < step:
                    kept.append(line)
            except ValueError:  # a line cut short by a kill
                continue
        write_text_atomically(self.metrics_path, "".join(line + "\n" for line in kept))

    def step(self, entry: dict) -> None:
        if not self.enabled:
            return
        self.metrics.write(json.dumps(entry) + "\n")
        self.metrics.flush()
        if self.writer is not None:
            for name, value in entry.items():
                if name != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{name}", value, entry["step"])
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{entry['loss']:.4f}", lr=f"{entry['lr']:.2e}")

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        self.metrics.close()
