"""Charts as PNG images, for email bodies (a mail client runs no JavaScript).

The image is drawn by plotly's own static export (kaleido), from the very
figure the HTML report draws (`html.figure`), so the email and the report
show the same chart. kaleido drives a headless Chrome or Chromium found on
the machine (Debian: `apt install chromium`); starting it costs about two
seconds, so every chart of a run is drawn in one batch, one browser.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

from pilotage.reports.views import ChartView

WIDTH, HEIGHT = 760, 400  # pixels: fits the 800-pixel body of common mail clients
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ImageError(RuntimeError):
    """The charts could not be drawn (no browser, a browser that failed)."""


def chart_pngs(charts: Sequence[ChartView], width: int = WIDTH, height: int = HEIGHT) -> list[bytes]:
    """Each chart as PNG bytes, drawn in one batch."""
    if not charts:
        return []
    import plotly.io as pio

    from pilotage.reports.html import figure

    figures = []
    for chart in charts:
        fig = figure(chart)
        fig["layout"] = {**fig["layout"], "height": height, "width": width}
        figures.append(fig)
    with tempfile.TemporaryDirectory(prefix="pilotage-charts-") as folder:
        paths = [Path(folder) / f"chart-{i}.png" for i in range(len(figures))]
        try:
            with warnings.catch_warnings():  # plotly passes options that a warm kaleido server ignores, and says so
                warnings.filterwarnings("ignore", message="The kopts argument is ignored")
                pio.write_images(figures, paths, format="png", width=width, height=height)
        except Exception as exc:  # kaleido raises its own and choreographer's errors: report them as one
            raise ImageError(f"cannot draw the charts as PNG images (plotly's kaleido needs Chrome or Chromium "
                             f"on this machine; on Debian: apt install chromium): {type(exc).__name__}: {exc}") \
                from None
        images = [path.read_bytes() for path in paths]
    bad = [i for i, image in enumerate(images) if not image.startswith(PNG_MAGIC)]
    if bad:
        raise ImageError(f"the chart image(s) {bad} are not PNG")
    return images
