"""Weekly summaries benchmark: every region's summary emailed, on the scale-4 warehouse.

    python3 bench/bench_weekly.py [--scale 4] [--week 2006-W50]

Uses the warehouse bench_load.py built (bench/out/load-s<scale>/w.duckdb), read
only. One recipient per 2005 region plus a national one. Measured, each in a
fresh process (wall time after imports, peak RSS):

* `send_weekly` for real, to an SMTP server on loopback (aiosmtpd): each
  recipient's reports rendered in its scope, its chart drawn (one Chromium for
  all), its message built, sent and archived;
* the same as a dry run (files and .eml written, nothing sent);
* the reference: `render_report(weekly-regional)` for all regions at once,
  unscoped, batched (what the scoped summaries cost more than).

The per-recipient rendering is the price of the guarantee that a recipient's
figures are computed in its scope by the cube, never filtered from a
national file.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, measured, report  # noqa: E402

SEND = """
import socket
from pathlib import Path
from aiosmtpd.controller import Controller
from pilotage.cubes.model import members
from pilotage.reports.delivery.config import parse_config
from pilotage.reports.delivery.weekly import send_weekly

class Sink:
    count = 0
    size = 0
    async def handle_DATA(self, server, session, envelope):
        Sink.count += 1
        Sink.size += len(envelope.content)
        return "250 OK"

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
controller = Controller(Sink(), hostname="127.0.0.1", port=port, data_size_limit=0)
controller.start()
folder = Path(out)
folder.mkdir(parents=True, exist_ok=True)
lines = ["address;name;scope", "dg@example.org;Direction générale;national"]
lines += [f"dr{code}@example.org;DR {name};region_2005:{code}" for code, name in members("region_2005")]
(folder / "recipients.csv").write_text("\\n".join(lines) + "\\n", encoding="utf-8")
config = parse_config({"paths": {"warehouse": warehouse, "drops": "drops", "output": str(folder),
                                 "recipients": str(folder / "recipients.csv")},
                       "smtp": {"host": "127.0.0.1", "port": port, "security": "none"},
                       "mail": {"sender": "Pilotage <pilotage@example.org>"}}, folder / "pilotage.toml")
start()
run = send_weekly(config, week, dry_run=dry_run, force=True)
controller.stop()
result["recipients"] = len(run.deliveries)
result["statuses"] = sorted({d.status for d in run.deliveries})
result["messages"] = Sink.count
result["mib_sent"] = Sink.size / 2**20
"""

REFERENCE = """
from pilotage.cubes import Cube
from pilotage.reports import render_report
cube = Cube(warehouse)
start()
paths = render_report(cube, "weekly-regional", week=week, out_dir=out)
result["files"] = len(paths)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=4)
    parser.add_argument("--week", default="2006-W50")
    parser.add_argument("--warehouse", type=Path, help="another warehouse to read (default: the scale's)")
    args = parser.parse_args()
    path = args.warehouse or OUT / f"load-s{args.scale:g}" / "w.duckdb"
    if not path.exists():
        raise SystemExit(f"no warehouse at {path}: run bench/bench_load.py --scale {args.scale:g} first")
    rows = []
    with tempfile.TemporaryDirectory() as out:
        reference = measured(REFERENCE, warehouse=str(path), week=args.week, out=f"{out}/reference")
        rows.append(("reference: render_report weekly-regional, all regions, batched",
                     f"{reference['seconds']:.2f}", f"{reference['peak_mib']:.0f}", f"{reference['files']} files"))
        print("  ", rows[-1], flush=True)
        for label, dry in (("send_weekly, dry run (files + .eml)", True), ("send_weekly, sent over SMTP", False)):
            step = measured(SEND, warehouse=str(path), week=args.week, out=f"{out}/{'dry' if dry else 'sent'}",
                            dry_run=dry)
            rows.append((label, f"{step['seconds']:.2f}", f"{step['peak_mib']:.0f}",
                         f"{step['recipients']} recipients {step['statuses']}, {step['messages']} messages, "
                         f"{step['mib_sent']:.0f} MiB sent"))
            print("  ", rows[-1], flush=True)
    print()
    report(rows, ("step (fresh process)", "seconds", "peak MiB", "output"))
    sent = float(rows[-1][1])
    print(f"\nsent over SMTP / reference: {sent / reference['seconds']:.2f}x; "
          f"{sent / (len(rows) and int(rows[-1][3].split()[0])):.2f} s per recipient")


if __name__ == "__main__":
    main()
