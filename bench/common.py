"""Shared helpers for the benchmarks: data preparation and measured steps.

Each measured step runs in a fresh Python process, so its wall time and its
peak memory (ru_maxrss of that process) are its own.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out"


def drops_for(scale: float, year: int = 2006) -> Path:
    """A year of generated drops at `scale`, generated once and reused."""
    folder = OUT / f"drops-s{scale:g}-{year}"
    done = folder / ".complete"
    if not done.exists():
        from pilotage.etl.generate import generate_drops

        started = time.monotonic()
        print(f"generating a year of drops at scale {scale:g} into {folder} ...", flush=True)
        generate_drops(folder, date(year, 1, 1), date(year, 12, 31), scale=scale, seed=42)
        done.write_text("ok")
        print(f"  generated in {time.monotonic() - started:.1f} s", flush=True)
    return folder


def measured(code: str, **values) -> dict:
    """Run `code` in a fresh interpreter; it sets `result` (a dict). Returns it with seconds, CPU seconds
    (of all its threads) and peak MiB.

    The timer starts after the imports the code does first, inside the child:
    the code calls `start()` when the measured work begins.
    """
    program = textwrap.dedent("""
        import json, resource, sys, time
        values = json.loads(sys.argv[1])
        globals().update(values)
        _t = [None, 0.0]
        def start():
            _t[0] = time.perf_counter()
            _t[1] = time.process_time()
        result = {}
    """) + textwrap.dedent(code) + textwrap.dedent("""
        seconds = time.perf_counter() - (_t[0] or 0)
        cpu_seconds = time.process_time() - _t[1]  # all threads: steadier than wall time on a busy machine
        # VmHWM: this process's own peak (ru_maxrss would carry the parent's across exec)
        hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
        result.update(seconds=seconds, cpu_seconds=cpu_seconds, peak_mib=int(hwm.split()[1]) / 1024)
        print("RESULT" + json.dumps(result, default=str))
    """)
    proc = subprocess.run([sys.executable, "-c", program, json.dumps(values, default=str)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark step failed:\n{proc.stderr[-4000:]}")
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def median_seconds(run, repeat: int = 5) -> float:
    """Median wall time of `run()` over `repeat` warm runs (after one warm-up)."""
    run()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def report(rows: list[tuple], header: tuple[str, ...]) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)))
