"""Portal load test: 200 concurrent sessions of mixed users against the scale-4 warehouse, on loopback.

    python3 bench/bench_portal.py [--scale 4] [--sessions 200] [--seconds 30]

Uses a copy of the warehouse bench_load.py built (bench/out/load-s<scale>/w.duckdb,
migrated if needed). Starts `uvicorn` serving the portal in a separate process,
then 200 client sessions (asyncio + httpx2, each logged in as one of 50 users of
regional, departmental and national organisations, readers and analysts) loop
over a mix of requests for the given time:

    dashboard 35 % · summaries list 10 % · explorer page 25 % · API query 15 %
    summary download (Excel) 5 % · indicators 10 %

It reports throughput and p50/p95/p99 latency per kind of request (goal: p95
under 300 ms for pages and typical explorer queries, no error), once with
the warehouse quiet and once while a daily drop is loaded into it in place
(`pilotage load`), and compares the explorer's median latency through HTTP
with the raw DuckDB time of the SQL the cube runs for the same questions.
The dashboards and summaries are warmed first (one request per scope: they
are computed once per scope and data state, as after the first visitor).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, report  # noqa: E402

PASSWORD = "banc d'essai du portail"
QUESTIONS = [  # typical explorer questions
    "measure=entries&measure=exits&by=month",
    "measure=entries&by=department&by=measure",
    "measure=stock&by=week&from=2006-09-01",
    "measure=payments_eur&by=department&by=quarter",
    "measure=entries&by=measure&by=week&from=2006-10-01",
    "measure=financial_consumption&by=measure",
]
API = [
    {"measures": ["entries", "stock"], "by": ["region_2005", "month"]},
    {"measures": ["payments_eur"], "by": ["measure", "quarter"]},
]
MIX = [("dashboard", 35), ("summaries", 10), ("explorer", 25), ("api", 15), ("download", 5), ("indicators", 10)]
SERVER = """
import sys, uvicorn
from pathlib import Path
from pilotage.portal.app import PortalSettings, create_app
root = Path(sys.argv[1])
app = create_app(PortalSettings(root / "w.duckdb", root / "portal.sqlite", root / "cache", alerts=None))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
"""


def prepare(root: Path, source: Path) -> list[tuple[str, str]]:
    """A copy of the warehouse and 50 users: (login, scope) of each."""
    from pilotage.cubes.model import members
    from pilotage.portal.accounts import Accounts

    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    shutil.copyfile(source, root / "w.duckdb")
    subprocess.run([sys.executable, "-m", "pilotage.cli", "-w", str(root / "w.duckdb"), "migrate"], check=True,
                   capture_output=True)
    accounts = Accounts(root / "portal.sqlite")
    scopes = [("DGEFP", "national_service", "national")]
    scopes += [(f"DR {name}", "regional_service", f"region_2005:{code}") for code, name in members("region_2005")]
    scopes += [(f"ALE {name}", "local_agency", f"department:{code}") for code, name in members("department")[:30]]
    users = []
    for index, (name, kind, scope) in enumerate(scopes[:50]):
        org = accounts.add_org(name, kind, scope)
        login = f"user{index}@example.org"
        user, _ = accounts.add_user(login, name, org, "analyst" if index % 3 else "reader")
        accounts.set_password(user.id, PASSWORD)
        users.append((login, scope, user.role))
    return users


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def session(base: str, login: str, role: str, deadline: float, timings: dict, errors: list, rng: random.Random,
                  week: str, region: str, logins: asyncio.Semaphore, ready: asyncio.Barrier, think: float):
    import re

    import httpx2 as httpx

    async with httpx.AsyncClient(base_url=base, timeout=300, follow_redirects=False) as client:
        async with logins:  # users arrive a few at a time (each login costs an argon2 verification)
            page = await client.get("/login")
            token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
            answer = await client.post("/login", data={"csrf": token, "login": login, "password": PASSWORD})
        if answer.status_code != 303:
            errors.append(f"login {login}: {answer.status_code}")
            await ready.wait()
            return
        home = await client.get("/")
        csrf = re.search(r'name="csrf" value="([^"]+)"', home.text).group(1)
        await ready.wait()  # every session logged in: the measured part starts
        deadline = time.monotonic() + deadline
        kinds = [k for k, _ in MIX]
        weights = [w for _, w in MIX]
        while time.monotonic() < deadline:
            if think:
                await asyncio.sleep(rng.expovariate(1 / think))  # a person reads the page before the next click
                if time.monotonic() >= deadline:
                    break
            kind = rng.choices(kinds, weights)[0]
            if role == "reader" and kind in ("explorer", "api"):
                kind = "dashboard"
            started = time.perf_counter()
            if kind == "dashboard":
                response = await client.get("/")
            elif kind == "summaries":
                response = await client.get("/summaries")
            elif kind == "explorer":
                response = await client.get("/explorer?" + rng.choice(QUESTIONS))
            elif kind == "api":
                response = await client.post("/api/query", json=rng.choice(API), headers={"X-CSRF-Token": csrf})
            elif kind == "download":
                response = await client.get(f"/summaries/{week}/{region}.xlsx")
            else:
                response = await client.get("/api/indicators")
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                errors.append(f"{kind} {login}: {response.status_code}")
            timings.setdefault(kind, []).append(elapsed)
            timings.setdefault("_ends", []).append(time.monotonic())


def region_of(scope: str) -> str:
    from pilotage.warehouse.reference import departments

    level, _, code = scope.partition(":")
    if level == "national":
        return "nation"
    if level == "region_2005":
        return code
    return next(d.region_2005_code for d in departments() if d.code == code)


async def load_test(base: str, users, sessions: int, seconds: float, week: str,
                    think: float = 0.0, during: list[str] | None = None) -> tuple[dict, list, float]:
    """Run the sessions; `during`: a command started 5 s into the measured window (the daily load)."""
    timings: dict[str, list[float]] = {}
    errors: list[str] = []
    logins, ready = asyncio.Semaphore(2), asyncio.Barrier(sessions)
    ready_at = []

    async def started_clock():
        await ready.wait()
        ready_at.append(time.monotonic())
        if during:
            await asyncio.sleep(5)
            launched = time.monotonic()
            process = await asyncio.create_subprocess_exec(*during, stdout=asyncio.subprocess.PIPE,
                                                           stderr=asyncio.subprocess.STDOUT)
            output, _ = await process.communicate()
            lines = output.decode().strip().splitlines()
            print(f"daily load: started {launched - ready_at[0]:.1f} s into the window, exit {process.returncode} "
                  f"after {time.monotonic() - launched:.1f} s: {lines[-1] if lines else ''}", flush=True)

    ready = asyncio.Barrier(sessions + 1)
    clock = asyncio.create_task(started_clock())
    await asyncio.gather(*(session(base, users[i % len(users)][0], users[i % len(users)][2], seconds, timings,
                                   errors, random.Random(i), week, region_of(users[i % len(users)][1]), logins, ready,
                                   think)
                           for i in range(sessions)))
    await clock
    ends = timings.pop("_ends", [ready_at[0] + seconds])
    return timings, errors, max(ends) - ready_at[0]  # from the first request to the end of the last


async def warm_up(base: str, users, week: str) -> None:
    """Each user's dashboard and latest summary once, as after the first visitor of each scope."""
    import re

    import httpx2 as httpx

    async def one(login: str, scope: str, slots: asyncio.Semaphore):
        async with slots, httpx.AsyncClient(base_url=base, timeout=600) as client:
            page = await client.get("/login")
            token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
            await client.post("/login", data={"csrf": token, "login": login, "password": PASSWORD})
            await client.get("/")
            await client.get(f"/summaries/{week}/{region_of(scope)}.xlsx")

    slots = asyncio.Semaphore(2)
    await asyncio.gather(*(one(login, scope, slots) for login, scope, _ in users))


def percentiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values) or [float("nan")]
    pick = (lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))])
    return pick(0.5), pick(0.95), pick(0.99)


def summary(label: str, timings: dict, errors: list, elapsed: float) -> list[tuple]:
    rows = []
    total = sum(len(v) for v in timings.values())
    for kind, values in sorted(timings.items()):
        p50, p95, p99 = percentiles(values)
        rows.append((label, kind, len(values), f"{len(values) / elapsed:.1f}", f"{p50 * 1000:.0f}",
                     f"{p95 * 1000:.0f}", f"{p99 * 1000:.0f}"))
    every = [v for values in timings.values() for v in values]
    p50, p95, p99 = percentiles(every)
    rows.append((label, "ALL", total, f"{total / elapsed:.1f}", f"{p50 * 1000:.0f}", f"{p95 * 1000:.0f}",
                 f"{p99 * 1000:.0f}"))
    print(f"{label}: {total} requests in {elapsed:.1f} s, {len(errors)} error(s)" +
          (f": {errors[:5]}" if errors else ""), flush=True)
    return rows


def raw_explorer(root: Path) -> tuple[float, float]:
    """Median seconds of the explorer's questions: the cube's SQL run raw in DuckDB, and through Cube.query."""
    from starlette.datastructures import QueryParams

    from pilotage.cubes import Cube, Scope
    from pilotage.portal.explorer import Exploration, run

    cube = Cube(root / "w.duckdb")
    scope = Scope.parse("region_2005:25")
    questions = [Exploration.from_params(QueryParams(q), cube.catalog) for q in QUESTIONS]
    raw, ours = [], []
    with cube.reading():
        con = cube._con
        for question in questions:
            as_of = cube.as_of()
            request = cube.request(question.measures, question.by, dict(question.where), question.start,
                                   question.end, None, scope, as_of)
            compiled = cube.compile(request)
            for _ in range(3):
                t = time.perf_counter()
                con.sql(compiled.sql, params=compiled.params).to_arrow_table()
                raw.append(time.perf_counter() - t)
                t = time.perf_counter()
                run(cube, question, scope)
                ours.append(time.perf_counter() - t)
    return statistics.median(raw), statistics.median(ours)


def daily_drop(root: Path) -> Path:
    """A realistic day after the warehouse's data (bench_load's: 1 % of the contracts in a new version and a
    day of payments), to load in place during the test."""
    from bench_load import make_daily_drop

    return make_daily_drop(root / "w.duckdb", root / "daily")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=4)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--week", default="2006-W50")
    parser.add_argument("--think", type=float, default=5.0,
                        help="mean seconds a session waits between two requests (0: flat out)")
    args = parser.parse_args()
    source = OUT / f"load-s{args.scale:g}" / "w.duckdb"
    if not source.exists():
        raise SystemExit(f"no warehouse at {source}: run bench/bench_load.py --scale {args.scale:g} first")
    root = OUT / "portal"
    print("preparing a copy of the warehouse and 50 users ...", flush=True)
    users = prepare(root, source)
    drops = daily_drop(root)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(root), str(port)])
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx2 as httpx

        rows: list[tuple] = []

        for _ in range(200):
            try:
                httpx.get(base + "/login", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        print("warming the dashboards and summaries of the 50 scopes ...", flush=True)
        started = time.monotonic()
        asyncio.run(warm_up(base, users, args.week))
        warm = time.monotonic() - started
        print(f"  warmed in {warm:.1f} s", flush=True)
        timings, errors, elapsed = asyncio.run(load_test(base, users, args.sessions, args.seconds, args.week,
                                                         args.think))
        rows += summary("quiet", timings, errors, elapsed)
        report(rows, ("phase", "request", "count", "per s", "p50 ms", "p95 ms", "p99 ms"))

        load = [sys.executable, "-m", "pilotage.cli", "-w", str(root / "w.duckdb"), "load", "--mode", "in-place",
                "--wait", "300", str(drops)]
        timings, errors, elapsed = asyncio.run(load_test(base, users, args.sessions, args.seconds, args.week,
                                                         args.think, during=load))
        rows += summary("during a daily load", timings, errors, elapsed)
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    print()
    report(rows, ("phase", "request", "count", "per s", "p50 ms", "p95 ms", "p99 ms"))
    raw, ours = raw_explorer(root)
    print(f"\n{args.sessions} sessions, think time {args.think:g} s on average between requests")
    print(f"explorer questions, median: raw DuckDB SQL {raw * 1000:.0f} ms, through the cube {ours * 1000:.0f} ms "
          f"({ours / raw:.2f}x); over HTTP with {args.sessions} sessions see the explorer row above")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
