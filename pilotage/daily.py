"""The daily run (`pilotage daily`): the day's work, in order, safe under cron.

1. load the new drops of the drops folder (those already loaded are skipped),
   and export the changed partitions to the lake when `paths.lake` is set;
2. evaluate the alert rules, and email the changes of state;
3. write the daily national dashboard, unless the warehouse has not changed
   since it was last written;
4. from the configured weekday on, send the weekly summaries of the week that
   ended (each recipient once: the archive of sent messages says who has his).

Every step is idempotent, so a second run the same day does nothing twice,
and a run that died midway is simply run again. One run at a time: the run
holds a lock (`<output>/.daily.lock`); a second run says who holds it and
exits with EXIT_BUSY. Everything is logged to `<output>/logs/daily-DATE.log`
as well as to the terminal.

Exit codes: 0 all done; 1 done, but something needs attention (a drop
refused, a message not delivered, an alert rule in error); 2 a configuration
problem; 3 a warehouse problem; 75 another daily run is in progress.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from pilotage.jsonfile import read_json, write_json
from pilotage.reports.delivery.config import Config

EXIT_OK, EXIT_ATTENTION, EXIT_CONFIG, EXIT_WAREHOUSE, EXIT_BUSY = 0, 1, 2, 3, 75
LOAD_WAIT = 600.0  # seconds a daily run waits for a load started by hand to finish
STATE_NAME = ".daily-state.json"


class DailyBusy(RuntimeError):
    """Another daily run holds the lock."""


@dataclass
class DailyResult:
    today: date
    steps: dict[str, str] = field(default_factory=dict)  # step -> what it did
    problems: list[str] = field(default_factory=list)  # what needs attention

    @property
    def exit_code(self) -> int:
        return EXIT_ATTENTION if self.problems else EXIT_OK


def lock_path(config: Config) -> Path:
    return Path(config.output) / ".daily.lock"


@contextmanager
def daily_lock(config: Config):
    """Hold the daily run's lock, or raise DailyBusy naming its holder."""
    path = lock_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown process"
            raise DailyBusy(f"another daily run is in progress ({holder}); this one stops") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, started {datetime.now():%Y-%m-%d %H:%M:%S}")
        handle.flush()
        yield
    finally:
        handle.close()


def logger_for(config: Config, today: date, console: bool = True) -> logging.Logger:
    """A logger writing to `<output>/logs/daily-DATE.log` (appended: each run of the day follows the last)."""
    folder = Path(config.output) / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    log = logging.getLogger(f"pilotage.daily.{id(config)}")
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    file_handler = logging.FileHandler(folder / f"daily-{today.isoformat()}.log", encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(message)s"))
    log.addHandler(file_handler)
    if console:
        stream = logging.StreamHandler()
        stream.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(stream)
    return log


def run_daily(config: Config, *, today: date | None = None, log: logging.Logger | None = None,
              ssl_context=None, environ: Mapping[str, str] | None = None, weekly: bool | None = None) -> DailyResult:
    """Do the day's work (see the module's docstring). Raises DailyBusy when another run holds the lock.

    weekly: send the weekly summaries today (True), not (False), or as the
    configured weekday says (None).
    """
    today = today or date.today()
    log = log or logger_for(config, today)
    result = DailyResult(today)
    with daily_lock(config):
        log.info("daily run of %s (configuration %s)", today.isoformat(), config.path)
        _load(config, result, log)
        _export(config, result, log)
        _alerts(config, result, log, ssl_context, environ)
        _daily_report(config, result, log)
        if weekly or (weekly is None and today.weekday() >= config.weekday):
            _weekly(config, today, result, log, ssl_context, environ)
        else:
            result.steps["weekly"] = f"not today (the summaries go out from {config.weekday_name} on)"
            log.info("weekly summaries: %s", result.steps["weekly"])
    log.info("done%s", f", {len(result.problems)} problem(s): " + "; ".join(result.problems)
             if result.problems else ", nothing to report")
    return result


def _load(config: Config, result: DailyResult, log: logging.Logger) -> None:
    from pilotage.etl.drop import find_drops
    from pilotage.etl.loader import load_drops
    from pilotage.warehouse import Warehouse

    if not Path(config.drops).is_dir():
        result.problems.append(f"the drops folder {config.drops} does not exist")
        log.error("load: the drops folder %s does not exist (paths.drops)", config.drops)
        return

    def said(outcome) -> None:
        if outcome.outcome != "skipped":
            (log.warning if outcome.outcome == "refused" else log.info)("load: %s", outcome.summary())

    found = find_drops([config.drops])
    outcome = load_drops(Warehouse(config.warehouse), [config.drops], wait=LOAD_WAIT, on_drop=said)
    loaded = [d for d in outcome.drops if d.outcome == "loaded"]
    refused = outcome.refused
    result.steps["load"] = (f"{len(found)} drop(s) found: {len(loaded)} loaded, {len(refused)} refused, "
                            f"{len(found) - len(loaded) - len(refused)} already loaded")
    for drop in refused:
        result.problems.append(f"drop {drop.date or drop.path.name} refused: {drop.message}")
    log.info("load: %s", result.steps["load"])


def _export(config: Config, result: DailyResult, log: logging.Logger) -> None:
    """The lake export (paths.lake), incremental: only the partitions the day's drops changed."""
    if config.lake is None:
        return
    from pilotage.lake import export_lake
    from pilotage.warehouse import Warehouse

    exported = export_lake(Warehouse(config.warehouse), config.lake)
    result.steps["export"] = exported.summary()
    log.info("export: %s", result.steps["export"])


def _alerts(config: Config, result: DailyResult, log: logging.Logger, ssl_context, environ) -> None:
    if config.alerts is None:
        result.steps["alerts"] = "no alert rules configured (paths.alerts)"
        log.info("alerts: %s", result.steps["alerts"])
        return
    from pilotage.reports.alerts import run_alerts

    run = run_alerts(config, ssl_context=ssl_context, environ=environ, log=lambda text: log.info("alerts: %s", text))
    result.steps["alerts"] = run.summary() if hasattr(run, "summary") else str(run)
    for problem in getattr(run, "problems", []):
        result.problems.append(f"alerts: {problem}")
    log.info("alerts: %s", result.steps["alerts"])


def _daily_report(config: Config, result: DailyResult, log: logging.Logger) -> None:
    """Write the national dashboard, once per state of the warehouse."""
    from pilotage.cubes import Cube
    from pilotage.reports.render import render_report

    cube = Cube(config.warehouse)
    with cube.warehouse.connect() as con:
        loads, last = con.execute("SELECT count(*), max(finished) FROM load_drops").fetchone()
    as_of = cube.as_of()
    mark = {"as_of": as_of.isoformat(), "loads": loads, "last_load": str(last)}
    state_path = Path(config.output) / STATE_NAME
    state = read_json(state_path)
    folder = Path(config.output) / "quotidien"
    if state.get("daily_report") == mark and any(folder.glob(f"*_{as_of.isoformat()}.html")):
        result.steps["daily report"] = f"already written for the warehouse as of {as_of.isoformat()}"
    else:
        paths = render_report(cube, "daily", out_dir=folder)
        state["daily_report"] = mark
        write_json(state_path, state)
        result.steps["daily report"] = "written: " + ", ".join(str(p) for p in paths)
    log.info("daily report: %s", result.steps["daily report"])


def _weekly(config: Config, today: date, result: DailyResult, log: logging.Logger, ssl_context, environ) -> None:
    from pilotage.reports.delivery.weekly import describe, send_weekly

    run = send_weekly(config, today=today, ssl_context=ssl_context, environ=environ,
                      log=lambda text: log.info("weekly: %s", text))
    lines = describe(run)
    result.steps["weekly"] = lines[-1]
    if run.held:
        log.warning("weekly: %s", run.held)
    for delivery in run.of("failed"):
        result.problems.append(f"weekly summary to {delivery.recipient.address} not delivered: {delivery.error}")
    log.info("weekly: %s", lines[-1])
