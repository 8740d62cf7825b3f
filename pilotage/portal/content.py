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
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from pilotage.cubes import Cube, Scope
from pilotage.reports.periods import week_bounds, week_label
from pilotage.reports.render import Prepared, prepare_views, write_views
from pilotage.warehouse import Warehouse


@dataclass(frozen=True)
class DataState:
    as_of: date
    loads: int  # loaded drops: changes when a drop lands, late ones included

    @property
    def key(self) -> str:
        return f"{self.as_of.isoformat()}#{self.loads}"


class Content:
    """The portal's access to the warehouse (one `Cube`, read-only connections per request)."""

    def __init__(self, warehouse: Warehouse, cache_dir: Path, cache_size: int = 512):
        self.warehouse = warehouse
        self.cube = Cube(warehouse)
        self.cache_dir = Path(cache_dir)
        self._views: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()
        self._size = cache_size
        self._locks: dict[tuple, threading.Lock] = {}

    def state(self) -> DataState:
        with self.warehouse.connect() as con:
            as_of, loads = con.execute("SELECT max(drop_date), count(*) FROM load_drops WHERE outcome = 'loaded'")\
                .fetchone()
        return DataState(as_of, loads)

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
        name = "daily-departmental" if scope.level == "department" else "daily"
        key = ("dashboard", str(scope), state.key)
        return self._cached(key, lambda: prepare_views(self.cube, name, scope=scope,
                                                       generated_at=datetime.now().replace(microsecond=0))[0])

    def weeks(self, state: DataState, count: int = 12) -> list[str]:
        """The last complete ISO weeks before the data date, newest first."""
        monday = week_bounds(week_label(state.as_of))[0]
        from datetime import timedelta

        return [week_label(monday - timedelta(weeks=n)) for n in range(1, count + 1)]

    def summary_files(self, scope: Scope, week: str, state: DataState, region: str, fmt: str) -> Path | None:
        """The weekly report of one region of the scope for `week` (HTML or Excel), rendered once per state."""
        from pilotage.reports.delivery.weekly import reports_for

        for name, regions, geography in reports_for(_Viewer(scope)):
            if regions is None and region == "nation" or regions and region in regions:
                break
        else:
            return None
        digest = hashlib.sha256(f"{scope}|{week}|{state.key}|{name}|{region}".encode()).hexdigest()[:32]
        folder = self.cache_dir / digest

        def build():
            prepared = prepare_views(self.cube, name, region=None if regions is None else (region,),
                                     geography=geography, week=week, scope=scope)
            return write_views(prepared, out_dir=folder)

        paths = self._cached(("summary", digest), build)
        wanted = [p for p in paths if p.suffix == f".{fmt}"]
        return wanted[0] if wanted and wanted[0].exists() else None

    def summary_regions(self, scope: Scope) -> list[tuple[str, str]]:
        """(code, name) of the reports a scope's weekly summary holds ('nation' for a national scope)."""
        from pilotage.cubes.model import members
        from pilotage.reports.delivery.weekly import reports_for

        found = []
        for name, regions, geography in reports_for(_Viewer(scope)):
            if regions is None:
                found.append(("nation", "France entière"))
            else:
                names = dict(members("region_2016" if geography == "2016" else "region_2005"))
                found += [(code, names[code]) for code in regions]
        return found


@dataclass(frozen=True)
class _Viewer:
    """What `reports_for` needs of a recipient: its scope."""

    scope: Scope
