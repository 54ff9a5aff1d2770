"""Run logging: a text log, TensorBoard scalars and images under ``logs/``, PNGs under ``images/``."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``[H,W,3]`` float in [0,1] (any device) -> uint8 numpy array."""
    return (image.detach().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy())


def save_png(path: str | Path, image: torch.Tensor) -> None:
    """Write a ``[H,W,3]`` float image in [0,1] as PNG."""
    import imageio.v3 as iio

    iio.imwrite(str(path), to_uint8(image))


class RunLogger:
    """Text log (``logs/train.log``, appended, so a resumed run keeps its past) and TensorBoard.

    TensorBoard is optional at run time: if ``torch.utils.tensorboard`` cannot be imported the
    text log still works and a note says why.
    """

    def __init__(self, run_dir: Path, tensorboard: bool = True, purge_step: int | None = None):
        self.log_dir = Path(run_dir) / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._text = open(self.log_dir / "train.log", "a", encoding="utf-8")  # noqa: SIM115
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step drops events past the resume point left by an interrupted run.
                self._writer = SummaryWriter(str(self.log_dir), purge_step=purge_step)
            except ImportError as exc:  # pragma: no cover - tensorboard is a dependency
                self.text(f"tensorboard unavailable ({exc}); scalars go to this log only")

    def text(self, line: str) -> None:
        """Append a time-stamped line to the text log."""
        self._text.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
        self._text.flush()

    def scalars(self, values: dict[str, float | None], step: int) -> None:
        """TensorBoard scalars (``None`` values skipped)."""
        if self._writer is None:
            return
        for tag, value in values.items():
            if value is not None:
                self._writer.add_scalar(tag, float(value), step)

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """TensorBoard image from ``[H,W,3]`` float in [0,1]."""
        if self._writer is not None:
            self._writer.add_image(tag, to_uint8(image), step, dataformats="HWC")

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if not self._text.closed:
            self._text.close()
