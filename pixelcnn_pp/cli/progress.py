"""The commands' progress bar."""

import sys
import time

__all__ = ["ProgressBar"]


class ProgressBar:
    """``bar(done, total, extra="")``: one line, redrawn, with a bar, ``unit done/total``,
    images per second and the seconds elapsed. ``images_per_unit``: images per counted unit
    (1 for images, the batch size for steps, batch / H for image rows). ``tty_only``: draw
    only when the stream is a terminal."""

    def __init__(self, label="", unit="images", images_per_unit=1.0, stream=None,
                 tty_only=False, width=30):
        self._time = time.time
        self.stream = stream or sys.stderr
        self.label = f"{label} " if label else ""
        self.unit, self.images_per_unit, self.width = unit, float(images_per_unit), width
        self.start = time.time()
        self.enabled = not tty_only or (hasattr(self.stream, "isatty") and self.stream.isatty())

    def __call__(self, done, total, extra=""):
        if not self.enabled:
            return
        elapsed = max(self._time() - self.start, 1e-9)
        n = int(self.width * done / max(total, 1))
        rate = done * self.images_per_unit / elapsed
        self.stream.write(f"\r{self.label}[{'#' * n}{'.' * (self.width - n)}] {self.unit} "
                          f"{done}/{total}  {rate:.3g} images/s  {elapsed:.0f}s"
                          + (f"  {extra}" if extra else ""))
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()

    def end(self):
        """End the line (a loop that stopped before ``total``)."""
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
