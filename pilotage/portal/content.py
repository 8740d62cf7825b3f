"""What the portal shows, computed in the viewer's scope and cached by (scope, data state).

Every figure comes from the cube with the user's `Scope`: the dashboard is
the daily report rendered for that scope, the weekly summaries are rendered
on demand for the scope (looked up by scope and week, never by a file path
a user could guess), and each cached item is keyed by the scope and by the
warehouse's state (its newest load), so a new drop shows as soon as it has
landed and nobody ever gets another scope's cache.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from markupsafe import Markup

from pilotage.cubes import Cube, Scope
from pilotage.reports.periods import week_bounds, week_label
from pilotage.reports.render import Prepared, prepare_views, write_views
from pilotage.warehouse import Warehouse, WarehouseBusy
from pilotage.warehouse.store import READ_WAIT

STATE_TTL = 1.0  # seconds: a new drop shows in the pages at most this long after it landed
# Background rebuilds rest this much of their own duration after each build: they then take at most
# a third of one core, and the requests keep the rest (dashboards show the new day a little later).
_PAUSE = 2.0


def _pause(worked: float) -> None:
    time.sleep(_PAUSE * worked)


@dataclass(frozen=True)
class DataState:
    as_of: date
    loads: int  # loaded drops: changes when a drop lands, late ones included

    @property
    def key(self) -> str:
        return f"{self.as_of.isoformat()}#{self.loads}"


class Content:
    """The portal's access to the warehouse (one `Cube`, read-only connections per request)."""

    def __init__(self, warehouse: Warehouse, cache_dir: Path, cache_size: int = 4096):
        self.warehouse = warehouse
        self.cube = Cube(warehouse)
        self.cache_dir = Path(cache_dir)
        self._views: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()
        self._size = cache_size
        self._locks: dict[tuple, threading.Lock] = {}
        self._latest: dict[str, tuple[str, Prepared]] = {}  # scope -> (state key, its newest dashboard built)
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pilotage-warm")
        self._pending: set[tuple] = set()
        self._state: tuple[float, DataState] | None = None
        self._latest_files: dict[str, list[Path]] = {}

    def state(self, fresh: float = STATE_TTL) -> DataState:
        """The warehouse's data state, read at most once per `fresh` seconds (every page needs it)."""
        now = time.monotonic()
        with self._lock:
            if self._state is not None and now - self._state[0] < fresh:
                return self._state[1]
        try:
            # while a load changes the file in place, keep showing the state before it rather than wait
            with self.warehouse.connect(wait=0 if self._state else READ_WAIT) as con:
                as_of, loads = con.execute(
                    "SELECT max(drop_date), count(*) FROM load_drops WHERE outcome = 'loaded'").fetchone()
        except WarehouseBusy:
            return self._state[1]
        state = DataState(as_of, loads)
        with self._lock:
            self._state = (now, state)
        return state

    def answer(self, question, scope: Scope, state: DataState):
        """An explorer or API answer, computed once per (scope, question, data state): the same questions come
        back often (shared links, the usual tables), and an answer changes only when a drop lands."""
        from pilotage.portal.explorer import run

        return self._cached(("answer", str(scope), question, state.key), lambda: run(self.cube, question, scope))

    def cached_answer(self, question, scope: Scope, state: DataState):
        with self._lock:
            return self._views.get(("answer", str(scope), question, state.key))

    def dashboard_html(self, scope: Scope, state: DataState):
        """The dashboard's blocks as HTML (the same for every user of the scope), and the view they show."""
        from pilotage.portal.pages import render
        from pilotage.reports.delivery.recipients import scope_label

        prepared = self.dashboard(scope, state)
        key = ("dashboard-html", str(scope), prepared.view.as_of, id(prepared))
        return self._cached(key, lambda: Markup(render("_dashboard_body.html", report=prepared.view,
                                                       scope_label=scope_label(scope)))), prepared

    def _cached(self, key: tuple, build):
        """One build per key even when many requests ask at once (the others wait for it)."""
        with self._lock:
            if key in self._views:
                self._views.move_to_end(key)
                return self._views[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                if key in self._views:
                    return self._views[key]
            value = build()
            with self._lock:
                self._views[key] = value
                self._locks.pop(key, None)
                while len(self._views) > self._size:
                    self._views.popitem(last=False)
            return value

    def dashboard(self, scope: Scope, state: DataState) -> Prepared:
        """The daily dashboard's view, in the scope, as of the newest drop.

        A scope of departments gets the departmental dashboard: the envelopes
        are allotted per region, so their consumption has no departmental figure.
        """
        key = ("dashboard", str(scope), state.key)
        with self._lock:
            ready = key in self._views
            latest = self._latest.get(str(scope))
        if not ready and latest is not None:
            # a new drop has landed: show the previous state's dashboard (its own date says which) while the
            # new one is computed in the background, rather than make every visitor wait for it at once
            self.refresh(scope, state)
            return latest[1]
        return self._build_dashboard(scope, state)

    def _build_dashboard(self, scope: Scope, state: DataState) -> Prepared:
        name = "daily-departmental" if scope.level == "department" else "daily"
        key = ("dashboard", str(scope), state.key)
        view = self._cached(key, lambda: prepare_views(self.cube, name, scope=scope,
                                                       generated_at=datetime.now().replace(microsecond=0))[0])
        with self._lock:
            known = self._latest.get(str(scope))
            if known is None or known[0] != state.key and known[1].view.as_of <= view.view.as_of:
                self._latest[str(scope)] = (state.key, view)
        return view

    def refresh(self, scope: Scope, state: DataState) -> None:
        """Build the scope's dashboard for `state` in the background (once, whoever asks)."""
        self._in_background((str(scope), state.key), lambda: self._build_dashboard(scope, state))

    def _quietly(self, work):
        """Background work on one DuckDB thread: the other core stays with the requests."""
        def run():
            with self.cube.reading(threads=1):
                return work()
        return run

    def _in_background(self, key: tuple, work) -> None:
        """Run `work` on the background thread, once per key however many ask meanwhile."""
        with self._lock:
            if key in self._pending:
                return
            self._pending.add(key)

        def run():
            started = time.monotonic()
            try:
                self._quietly(work)()
            except Exception:  # noqa: BLE001 -- logged; the next request tries again
                logging.getLogger("pilotage.portal").exception("building %s in the background", key)
            finally:
                with self._lock:
                    self._pending.discard(key)
            _pause(time.monotonic() - started)

        self._background.submit(run)

    def warm(self, scopes, stop: threading.Event, every: float = 5.0) -> None:
        """Keep the dashboards of `scopes()` built for the newest data state (a daemon thread's loop)."""
        while not stop.is_set():
            try:
                state = self.state()
                for scope in scopes():
                    if stop.is_set():
                        return
                    started = time.monotonic()
                    self._quietly(lambda: self._build_dashboard(scope, state))()
                    stop.wait(_PAUSE * (time.monotonic() - started))
            except Exception:  # noqa: BLE001 -- a warehouse being replaced, say: try again later
                logging.getLogger("pilotage.portal").exception("warming the dashboards")
            stop.wait(every)

    def weeks(self, state: DataState, count: int = 12) -> list[str]:
        """The last complete ISO weeks before the data date, newest first."""
        monday = week_bounds(week_label(state.as_of))[0]
        return [week_label(monday - timedelta(weeks=n)) for n in range(1, count + 1)]

    def summary_files(self, scope: Scope, week: str, state: DataState, region: str, fmt: str) -> Path | None:
        """The weekly report of one region of the scope for `week` (HTML or Excel), rendered once per state."""
        from pilotage.reports.delivery.weekly import reports_for

        for name, regions, geography in reports_for(scope):
            if regions is None and region == "nation" or regions and region in regions:
                break
        else:
            return None
        digest = hashlib.sha256(f"{scope}|{week}|{state.key}|{name}|{region}".encode()).hexdigest()[:32]
        folder = self.cache_dir / digest
        which = f"summary|{scope}|{week}|{region}"

        def build():
            prepared = prepare_views(self.cube, name, region=None if regions is None else (region,),
                                     geography=geography, week=week, scope=scope)
            paths = write_views(prepared, out_dir=folder)
            with self._lock:
                self._latest_files[which] = paths
            return paths

        with self._lock:
            ready = ("summary", digest) in self._views
            latest = self._latest_files.get(which)
        if ready or latest is None:
            paths = self._cached(("summary", digest), build)
        else:  # rendered for an earlier state (the file says its date): send it, render the new one aside
            paths = latest
            self._in_background(("summary", digest), lambda: self._cached(("summary", digest), build))
        wanted = [p for p in paths if p.suffix == f".{fmt}"]
        return wanted[0] if wanted and wanted[0].exists() else None

    def summary_regions(self, scope: Scope) -> list[tuple[str, str]]:
        """(code, name) of the reports a scope's weekly summary holds ('nation' for a national scope)."""
        from pilotage.cubes.model import members
        from pilotage.reports.delivery.weekly import reports_for

        found = []
        for name, regions, geography in reports_for(scope):
            if regions is None:
                found.append(("nation", "France entière"))
            else:
                names = dict(members("region_2016" if geography == "2016" else "region_2005"))
                found += [(code, names[code]) for code in regions]
        return found
