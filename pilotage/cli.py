"""The `pilotage` command line: parses, calls the library, prints.

Exit codes: 0 success; 1 some drop was refused (the others loaded), or some
message was not delivered (the others were); 2 usage or configuration error;
3 warehouse problem (missing, unreadable, outdated); 4 the weekly summaries
are held (the week's drops are not all loaded); 75 busy: another load or
daily run holds the lock (try again later).
"""

from __future__ import annotations

import sys
import time
from datetime import date
from pathlib import Path

import click

from pilotage import formats
from pilotage.cubes import QueryError, ScopeError
from pilotage.measures.catalog import DeclarationError
from pilotage.reports.declarations import ReportError
from pilotage.warehouse import Warehouse, WarehouseBusy, WarehouseError

EXIT_REFUSED = 1
EXIT_CONFIG = 2
EXIT_WAREHOUSE = 3
EXIT_HELD = 4
EXIT_BUSY = 75


class PilotageError(click.ClickException):
    """A user-facing error with a meaningful exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_WAREHOUSE):
        super().__init__(message)
        self.exit_code = exit_code


def _warehouse(ctx: click.Context) -> Warehouse:
    return Warehouse(ctx.obj["warehouse"])


def _guard(func):
    """Turn library errors into clear messages and exit codes."""

    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except WarehouseBusy as exc:
            raise PilotageError(str(exc), EXIT_BUSY) from None
        except (WarehouseError, FileNotFoundError) as exc:
            raise PilotageError(str(exc)) from None
        except (QueryError, ScopeError, DeclarationError, ReportError) as exc:
            raise click.UsageError(str(exc)) from None
        except Exception as exc:
            code = _service_exit_code(exc)
            if code is None:
                raise
            raise PilotageError(str(exc), code) from None

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


def _service_exit_code(exc: Exception) -> int | None:
    """The exit code of an error of the service commands (send, alerts, daily), None for another error."""
    from pilotage.daily import DailyBusy
    from pilotage.reports.delivery.archive import ArchiveError
    from pilotage.reports.delivery.config import ConfigError
    from pilotage.reports.delivery.recipients import RecipientsError
    from pilotage.reports.delivery.weekly import WeeklyError
    from pilotage.reports.images import ImageError

    from pilotage.portal.accounts import AccountsError

    if isinstance(exc, AccountsError):
        return EXIT_CONFIG
    if isinstance(exc, DailyBusy):
        return EXIT_BUSY
    if isinstance(exc, (ConfigError, RecipientsError, WeeklyError)):
        return EXIT_CONFIG
    if isinstance(exc, (ImageError, ArchiveError)):
        return EXIT_REFUSED
    try:
        from pilotage.reports.alerts import AlertRulesError
    except ImportError:
        return None
    return EXIT_CONFIG if isinstance(exc, AlertRulesError) else None


def _date(ctx, param, value):
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date YYYY-MM-DD") from None


def _engine_options(func):
    func = click.option("--spark-master", default="local[2]", show_default=True,
                        help="Spark master URL, for --engine spark.")(func)
    func = click.option("--lake", type=click.Path(file_okay=False), help="The lake folder, for --engine spark.")(func)
    return click.option("--engine", type=click.Choice(["duckdb", "spark"]), default="duckdb", show_default=True,
                        help="duckdb: the warehouse file; spark: the lake written by `pilotage export` "
                             "(--lake).")(func)


def _cube(ctx, catalog, engine: str, lake: str | None, spark_master: str):
    """The cube on the engine asked: the warehouse (duckdb) or the lake through Spark SQL."""
    from pilotage.cubes import Cube

    if engine == "spark":
        if not lake:
            raise click.UsageError("--engine spark reads the lake: give --lake PATH (written by `pilotage export`)")
        from pilotage.cubes.spark import SparkCube

        return SparkCube(lake, spark_master, catalog)
    return Cube(_warehouse(ctx), catalog)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--warehouse", "-w", type=click.Path(dir_okay=False), envvar="PILOTAGE_WAREHOUSE",
              help="Warehouse file (default $PILOTAGE_WAREHOUSE, else ./pilotage.duckdb).")
@click.version_option(package_name="pilotage")
@click.pass_context
def main(ctx: click.Context, warehouse: str | None) -> None:
    """pilotage: steering and reporting for subsidised-employment contracts."""
    ctx.ensure_object(dict)
    ctx.obj["warehouse"] = warehouse


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--wait", type=float, default=0.0, show_default=True,
              help="Seconds to wait for another load to finish before giving up.")
@click.option("--quiet", "-q", is_flag=True, help="Print only refused drops and the final line.")
@click.option("--mode", type=click.Choice(["auto", "in-place", "copy"]), default="auto", show_default=True,
              help="Change the warehouse in place (readers wait) or through a copy (readers go on); "
                   "auto: in place for a day's drops.")
@click.pass_context
@_guard
def load(ctx: click.Context, paths: tuple[str, ...], wait: float, quiet: bool, mode: str) -> None:
    """Load drops (a drop folder YYYY-MM-DD, or a folder of them) into the warehouse.

    Example: pilotage load /data/drops/2006-03-14 /data/backlog
    """
    from pilotage.etl.drop import find_drops
    from pilotage.etl.loader import load_drops

    warehouse = _warehouse(ctx)
    total = len(find_drops([Path(p) for p in paths]))
    started = time.monotonic()

    def on_drop(outcome) -> None:
        if not quiet or outcome.outcome == "refused":
            click.echo(outcome.summary(), err=outcome.outcome == "refused")
            for warning in outcome.warnings:
                click.echo(f"  warning: {warning}", err=True)

    with _progress(total, "loading drops", minimum=20) as bar:
        result = load_drops(warehouse, paths, wait=wait, on_drop=on_drop, on_progress=bar.update,
                            in_place={"auto": None, "in-place": True, "copy": False}[mode])
    counts = {k: sum(1 for d in result.drops if d.outcome == k) for k in ("loaded", "skipped", "refused")}
    click.echo(
        f"{counts['loaded']} loaded, {counts['skipped']} skipped, {counts['refused']} refused "
        f"in {time.monotonic() - started:.1f} s -> {warehouse.path}"
    )
    if result.released_payments:
        click.echo(f"{result.released_payments} held payment(s) loaded now that their contract arrived")
    if not result.ok:
        ctx.exit(EXIT_REFUSED)


def _progress(length: int, label: str, minimum: int = 1):
    """A progress bar on stderr for long runs in a terminal; nothing otherwise (cron, pipes)."""
    if length < minimum or not sys.stderr.isatty():
        return _NoBar()
    return click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True)


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int) -> None:
        pass


@main.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
@_guard
def status(ctx: click.Context, fmt: str) -> None:
    """What the warehouse holds: as-of date, drops, rows, rejects.

    Example: pilotage status --format json
    """
    from pilotage.etl.audit import status as read_status

    info = read_status(_warehouse(ctx))
    if fmt == "json":
        click.echo(formats.to_json(info))
        return
    width = max(len(k) for k in info)
    for key, value in info.items():
        click.echo(f"{key.ljust(width)}  {'' if value is None else value}")


@main.command()
@click.option("--drop", "drop", callback=_date, help="Only the rejects of this drop (YYYY-MM-DD).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.pass_context
@_guard
def rejects(ctx: click.Context, drop: date | None, fmt: str) -> None:
    """The quarantine: rejected rows with file, line, column and rule.

    Example: pilotage rejects --drop 2006-03-14 --format csv
    """
    from pilotage.etl.audit import REJECT_COLUMNS
    from pilotage.etl.audit import rejects as read_rejects
    from pilotage.etl.spec import rule_messages

    rows = read_rejects(_warehouse(ctx), drop)
    if fmt == "json":
        click.echo(formats.to_json(rows))
    elif fmt == "csv":
        click.echo(formats.to_csv(rows, REJECT_COLUMNS), nl=False)
    else:
        click.echo(formats.to_table(rows, REJECT_COLUMNS))
        messages = rule_messages()
        used = sorted({r["rule"] for r in rows})
        if used:
            click.echo("\nrules:")
            for rule in used:
                click.echo(f"  {rule}: {messages.get(rule, '')}")


@main.command()
@click.pass_context
@_guard
def migrate(ctx: click.Context) -> None:
    """Bring the warehouse file to this release's schema (creating it if needed).

    Example: pilotage -w /data/pilotage.duckdb migrate
    """
    from pilotage.warehouse.schema import SCHEMA_VERSION

    warehouse = _warehouse(ctx)
    with warehouse.write():
        pass
    click.echo(f"{warehouse.path} is at schema version {SCHEMA_VERSION}")


@main.command()
@click.option("--measure", "-m", "measures", multiple=True, required=True,
              help="Indicator to compute (repeat for several); see `pilotage indicators`.")
@click.option("--by", "by", multiple=True, help="Dimension to break down by (repeat), e.g. region_2005, week.")
@click.option("--where", "where", multiple=True, help="Filter dimension=value[,value...] (repeat).")
@click.option("--from", "start", callback=_date, help="First day of the range (default: January 1 of the as-of year).")
@click.option("--to", "end", callback=_date, help="Last day of the range (default and at most: the as-of date).")
@click.option("--known-at", callback=_date, help="Answer as the warehouse knew it after the drops up to this date.")
@click.option("--scope", help="Restrict to a scope: nation, region_2005:25,23, department:14,50...")
@click.option("--compare", type=click.Choice(["previous", "year"]),
              help="Add each indicator's value for the previous period, or the same period a year before.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "xlsx"]), default="table",
              show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to this file instead of stdout.")
@click.option("--labels", is_flag=True, help="Add a <dimension>_name column after each coded dimension.")
@click.option("--sql", "show_sql", is_flag=True, help="Print the compiled SQL instead of running it.")
@click.option("--measures-path", multiple=True, type=click.Path(exists=True),
              help="Extra indicator declarations (YAML file or folder).")
@_engine_options
@click.pass_context
@_guard
def query(ctx, measures, by, where, start, end, known_at, scope, compare, fmt, output, labels, show_sql,
          measures_path, engine, lake, spark_master) -> None:
    """Evaluate indicators by any mix of dimensions.

    Example: pilotage query -m entries -m stock --by region_2005 --by week
    --where measure=CAE --from 2006-01-01 --to 2006-03-31
    """
    from pilotage.measures.catalog import load_catalog

    cube = _cube(ctx, load_catalog(list(measures_path)), engine, lake, spark_master)
    if show_sql:
        request = cube.request(measures, by, where, start, end, known_at, scope, cube.as_of(known_at))
        compiled = cube.compile(request)
        if engine == "spark":
            from pilotage.cubes.spark import to_spark

            click.echo(to_spark(compiled.sql, compiled.params))
            return
        click.echo(compiled.sql)
        click.echo("-- parameters: " + formats.to_json(compiled.params).replace("\n", " "))
        return
    table = cube.compare(measures, by, where, start, end, known_at, scope, compare, labels) if compare \
        else cube.query(measures, by, where, start, end, known_at, scope, labels=labels)
    formats.write_table(table, fmt, output)


def _formats(ctx, param, value: str) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(f.strip() for f in value.split(",") if f.strip()))
    bad = [f for f in formats if f not in ("html", "xlsx")]
    if bad or not formats:
        raise click.BadParameter(f"html, xlsx or html,xlsx (got {value!r})")
    return formats


@main.command()
@click.argument("name", metavar="REPORT")
@click.option("--out", "out", type=click.Path(file_okay=False), required=True, help="Folder to write the files to.")
@click.option("--as-of", "as_of", callback=_date, help="The day shown (default: the newest drop loaded).")
@click.option("--week", help="An ISO week YYYY-Www, shown up to its Sunday (per-region reports; default: "
                             "the week of the newest drop).")
@click.option("--known-at", callback=_date, help="As the warehouse knew it after the drops up to this date.")
@click.option("--region", "regions", multiple=True, help="Region code (repeat); default: every region.")
@click.option("--geography", type=click.Choice(["2005", "2016"]), default="2005", show_default=True,
              help="Regions before (2005) or after (2016) the 2016 reform.")
@click.option("--format", "formats", default="html,xlsx", show_default=True, callback=_formats,
              help="html, xlsx or both, comma-separated.")
@click.option("--reports-path", multiple=True, type=click.Path(exists=True),
              help="Extra report declarations (YAML file or folder).")
@click.option("--measures-path", multiple=True, type=click.Path(exists=True),
              help="Extra indicator declarations (YAML file or folder).")
@_engine_options
@click.pass_context
@_guard
def report(ctx, name, out, as_of, week, known_at, regions, geography, formats, reports_path, measures_path, engine,
           lake, spark_master) -> None:
    """Write a report as HTML and Excel files: daily, weekly-regional, or one declared in YAML.

    Example: pilotage report daily --as-of 2006-03-14 --out reports/

    Example: pilotage report weekly-regional --week 2006-W11 --region 25 --region 23 --out reports/
    """
    from pilotage.measures.catalog import load_catalog
    from pilotage.reports import get_report, render_report, report_regions

    started = time.monotonic()
    cube = _cube(ctx, load_catalog(list(measures_path)), engine, lake, spark_master)
    declared = get_report(name, list(reports_path), cube.catalog)
    count = len(report_regions(declared, regions, geography) or [None])
    with _progress(count, f"{name}: writing reports", minimum=2) as bar:
        paths = render_report(cube, name, as_of=as_of, known_at=known_at, formats=formats, out_dir=out,
                              region=regions or None, geography=geography, week=week, progress=bar.update,
                              definitions=list(reports_path))
    for path in paths:
        click.echo(str(path))
    click.echo(f"{len(paths)} file(s) written to {out} in {time.monotonic() - started:.1f} s", err=True)


@main.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--measures-path", multiple=True, type=click.Path(exists=True))
def indicators(fmt: str, measures_path) -> None:
    """List the declared indicators with their labels and kinds.

    Example: pilotage indicators --format json
    """
    from pilotage.measures.catalog import load_catalog

    rows = [{"name": i.name, "kind": i.kind, "format": i.format, "label": i.label, "description": i.description}
            for i in load_catalog(list(measures_path))]
    if fmt == "json":
        click.echo(formats.to_json(rows))
    else:
        click.echo(formats.to_table(rows, ("name", "kind", "format", "label"), max_width=70))


EXAMPLE_RECIPIENTS = """\
# Who gets the weekly summaries and the alerts: address;name;scope
# scope: national, region_2005:CODE[,CODE], region_2016:CODE, department:CODE[,CODE]
address;name;scope
dg@example.org;Direction générale;national
dr-basse-normandie@example.org;DR Basse-Normandie;region_2005:25
ut-manche@example.org;UT Manche;department:50
"""


@main.command()
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def init(force: bool) -> None:
    """Write a commented example pilotage.toml, with example recipients.csv and alerts.yml, here.

    Example: pilotage init && $EDITOR pilotage.toml recipients.csv alerts.yml
    """
    from pilotage.reports.alerts.rules import example_rules
    from pilotage.reports.delivery.config import CONFIG_NAME, example_config

    files = {Path(CONFIG_NAME): example_config(), Path("recipients.csv"): EXAMPLE_RECIPIENTS,
             Path("alerts.yml"): example_rules()}
    if Path(CONFIG_NAME).exists() and not force:
        raise click.UsageError(f"{CONFIG_NAME} already exists (--force to overwrite)")
    for path, text in files.items():
        if path.exists() and not force:
            click.echo(f"kept {path} (already there)")
            continue
        path.write_text(text, encoding="utf-8")
        click.echo(f"wrote {path}")
    click.echo("the SMTP password goes in the environment variable that pilotage.toml names, never in the file")


@main.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--start", callback=_date, default="2006-01-01", show_default=True)
@click.option("--end", callback=_date, default="2006-12-31", show_default=True)
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="1 is about 250,000 contract entries a year.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--bad-rows/--no-bad-rows", default=True, show_default=True,
              help="Include a small share of rows breaking each rule of the interface.")
def generate(out: str, start: date, end: date, scale: float, seed: int, bad_rows: bool) -> None:
    """Write realistic synthetic drops, one folder per working day.

    Example: pilotage generate drops --start 2006-01-01 --end 2006-12-31 --scale 1
    """
    drops = _generate(Path(out), start, end, scale, seed, bad_rows)
    click.echo(f"{len(drops)} drops written to {out}")


def _generate(out: Path, start: date, end: date, scale: float, seed: int, bad_rows: bool) -> list[Path]:
    from pilotage.etl.generate import generate_drops

    if end < start:
        raise click.BadParameter("--end is before --start")
    days = (end - start).days + 1
    with _progress(days * 5 // 7, "generating drops") as bar:
        return generate_drops(out, start, end, scale=scale, seed=seed, bad_rows=bad_rows, progress=bar.update)


@main.command()
@click.option("--out", "out", type=click.Path(file_okay=False), default="pilotage-demo", show_default=True,
              help="Working folder: drops, warehouse and reports go there.")
@click.option("--scale", type=float, default=0.5, show_default=True)
@click.option("--year", type=int, default=2006, show_default=True)
@click.pass_context
@_guard
def demo(ctx: click.Context, out: str, scale: float, year: int) -> None:
    """Generate a year of synthetic drops, load them, write the reports, and say where to look.

    Example: pilotage demo --out /tmp/demo
    """
    from pilotage.etl.loader import load_drops

    folder = Path(out).resolve()
    drops_dir = folder / "drops"
    warehouse = Warehouse(ctx.obj["warehouse"] or folder / "pilotage.duckdb")
    started = time.monotonic()
    if not drops_dir.exists() or not any(drops_dir.iterdir()):
        drops = _generate(drops_dir, date(year, 1, 1), date(year, 12, 31), scale, 42, True)
    else:
        drops = sorted(p for p in drops_dir.iterdir() if p.is_dir())
        click.echo(f"reusing the {len(drops)} drops already in {drops_dir}")
    with _progress(len(drops), "loading drops") as bar:
        result = load_drops(warehouse, [drops_dir], on_progress=bar.update)
    from pilotage.etl.audit import status as read_status

    info = read_status(warehouse)
    loaded = sum(1 for d in result.drops if d.outcome == "loaded")
    click.echo(f"\n{loaded} drops loaded in {time.monotonic() - started:.1f} s (as of {info['as_of']}): "
               f"{info['contracts']:,} contracts, {info['payments']:,} payments, "
               f"{info['rejected_rows']:,} rejected rows, {info['held_payments']:,} held payments")
    from pilotage.cubes import Cube
    from pilotage.cubes.model import members
    from pilotage.reports import render_report

    reports_dir = folder / "reports"
    cube = Cube(warehouse)
    written = render_report(cube, "daily", out_dir=reports_dir)
    with _progress(len(members("region_2005")), "writing regional reports") as bar:
        written += render_report(cube, "weekly-regional", out_dir=reports_dir, progress=bar.update)
    click.echo(f"\nwarehouse: {warehouse.path}")
    click.echo(f"drops:     {drops_dir}")
    click.echo(f"reports:   {reports_dir} ({len(written)} files: open {written[0].name} in a browser)")
    click.echo(f"try:       pilotage -w {warehouse.path} status")
    click.echo(f"           pilotage -w {warehouse.path} rejects --format csv | head")
    click.echo(f"           pilotage -w {warehouse.path} query -m entries -m stock -m financial_consumption "
               "--by region_2005 --labels")


@main.command("export")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--full", is_flag=True, help="Write every partition again (default: only those that changed).")
@click.pass_context
@_guard
def export_command(ctx, path: str, full: bool) -> None:
    """Export the star schema to PATH as Hive-partitioned Parquet (facts by year), for Spark or any engine.

    Only the partitions that changed since the last export are written again.

    Example: pilotage export /data/lake
    """
    from pilotage.lake import export_lake

    started = time.monotonic()
    result = export_lake(_warehouse(ctx), path, full=full)
    click.echo(f"{result.summary()} in {time.monotonic() - started:.1f} s")


# -- the service: configuration, weekly summaries, alerts, the daily run ---------------------------

def _config_option(func):
    return click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False),
                        envvar="PILOTAGE_CONFIG",
                        help="The configuration file (default $PILOTAGE_CONFIG, else ./pilotage.toml).")(func)


def _today_option(func):
    return click.option("--today", callback=_date,
                        help="Run as if on this day (YYYY-MM-DD), to catch up on a missed day.")(func)


def _config(config_path: str | None):
    from pilotage.reports.delivery.config import load_config

    return load_config(config_path)


@main.group()
def send() -> None:
    """Send the emailed summaries."""


@send.command("weekly")
@_config_option
@click.option("--week", help="The ISO week YYYY-Www (default: the week that ended most recently).")
@_today_option
@click.option("--to", "only", multiple=True, help="Only this recipient's summary (an address; repeat).")
@click.option("--dry-run", is_flag=True, help="Build every message into the output folder, send nothing.")
@click.option("--resend", is_flag=True, help="Send again to the recipients who already have this week's summary.")
@click.option("--force", is_flag=True, help="Send even if some of the week's drops are not loaded.")
@click.pass_context
@_guard
def send_weekly_command(ctx, config_path, week, today, only, dry_run, resend, force) -> None:
    """Build each recipient's weekly summary in its scope and email it, once per week and recipient.

    Example: pilotage send weekly --week 2006-W11 --dry-run
    """
    from pilotage.reports.delivery.weekly import describe, send_weekly

    config = _config(config_path)
    run = send_weekly(config, week, today=today, only=only, dry_run=dry_run, resend=resend, force=force)
    for line in describe(run):
        click.echo(line, err=bool(run.held))
    if run.held:
        ctx.exit(EXIT_HELD)
    if not run.ok:
        ctx.exit(EXIT_REFUSED)


@main.group()
def alerts() -> None:
    """The alert rules: their states, their history, an evaluation now."""


def _alerts_warehouse(ctx, config_path: str | None) -> Warehouse:
    """The warehouse given with --warehouse, else the configuration's."""
    if ctx.obj["warehouse"]:
        return _warehouse(ctx)
    return Warehouse(_config(config_path).warehouse)


@alerts.command("list")
@_config_option
@click.option("--rule", help="Only this rule.")
@click.option("--state", type=click.Choice(["OK", "FIRING", "NO DATA", "ERROR"]), help="Only this state.")
@click.option("--all", "every_period", is_flag=True, help="Also the earlier years of once-a-year rules.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.pass_context
@_guard
def alerts_list(ctx, config_path, rule, state, every_period, fmt) -> None:
    """The state of each (rule, member): OK, FIRING, NO DATA or ERROR, and since when.

    Example: pilotage alerts list --state FIRING
    """
    from pilotage.reports.alerts.run import STATE_COLUMNS, format_states
    from pilotage.reports.alerts.state import alert_states

    rows = alert_states(_alerts_warehouse(ctx.find_root(), config_path), rule, state, every_period)
    _echo_rows(rows, STATE_COLUMNS, fmt, format_states)


@alerts.command("history")
@_config_option
@click.option("--rule", help="Only this rule.")
@click.option("--member", help="Only this member (e.g. 25/CAE).")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.pass_context
@_guard
def alerts_history(ctx, config_path, rule, member, limit, fmt) -> None:
    """The changes of state (fired, resolved...), newest first.

    Example: pilotage alerts history --rule consommation-financiere --limit 20
    """
    from pilotage.reports.alerts.run import HISTORY_COLUMNS, format_history
    from pilotage.reports.alerts.state import alert_history

    rows = alert_history(_alerts_warehouse(ctx.find_root(), config_path), rule, member, limit)
    _echo_rows(rows, HISTORY_COLUMNS, fmt, format_history)


@alerts.command("run")
@_config_option
@click.option("--dry-run", is_flag=True, help="Evaluate and say what would change and be sent; record nothing.")
@click.pass_context
@_guard
def alerts_run(ctx, config_path, dry_run) -> None:
    """Evaluate the rules now, record the changes of state and email them (the daily run does it too).

    Example: pilotage alerts run --dry-run
    """
    from pilotage.reports.alerts.run import run_alerts

    run = run_alerts(_config(config_path), dry_run=dry_run, log=click.echo)
    click.echo(run.summary())
    if not run.ok:
        ctx.exit(EXIT_REFUSED)


def _echo_rows(rows: list[dict], columns, fmt: str, as_table) -> None:
    if fmt == "json":
        click.echo(formats.to_json(rows))
    elif fmt == "csv":
        click.echo(formats.to_csv(rows, columns), nl=False)
    else:
        click.echo(as_table(rows))


@main.command()
@_config_option
@_today_option
@click.option("--weekly/--no-weekly", default=None,
              help="Send the weekly summaries today, or not (default: from the configured weekday on).")
@click.pass_context
@_guard
def daily(ctx, config_path, today, weekly) -> None:
    """The day's work for cron: load new drops, alerts, daily report, weekly summaries on their day.

    Safe to run again: what is done is not done twice. One run at a time
    (a second one exits with 75). Logs to <output>/logs/daily-DATE.log.

    Example: pilotage daily --config /etc/pilotage/pilotage.toml
    """
    from pilotage.daily import run_daily

    result = run_daily(_config(config_path), today=today, weekly=weekly)
    ctx.exit(result.exit_code)


@main.command()
@_config_option
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1: this machine only).")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--certfile", type=click.Path(exists=True, dir_okay=False), help="TLS certificate (PEM): serve HTTPS.")
@click.option("--keyfile", type=click.Path(exists=True, dir_okay=False), help="TLS private key (PEM).")
@click.option("--workers", type=int, default=1, show_default=True, hidden=True)
@click.pass_context
@_guard
def serve(ctx, config_path, host, port, certfile, keyfile, workers) -> None:
    """Serve the web portal: authenticated, each user in the scope of their organisation.

    Without a certificate it listens on this machine only (127.0.0.1), unless
    --host says otherwise: put it behind an HTTPS proxy, or give --certfile
    and --keyfile.

    Example: pilotage serve --host 0.0.0.0 --port 8443 --certfile cert.pem --keyfile key.pem
    """
    import uvicorn

    from pilotage.portal.app import PortalSettings, create_app

    if bool(certfile) != bool(keyfile):
        raise click.UsageError("give both --certfile and --keyfile, or neither")
    config = _config(config_path)
    https = bool(certfile)
    host = host or "127.0.0.1"
    if not https:
        click.echo(f"no certificate: serving plain HTTP on {host}:{port}"
                   + (" (this machine only)" if host in ("127.0.0.1", "localhost", "::1") else
                      " -- WARNING: passwords and figures travel unencrypted; use --certfile/--keyfile or a proxy"),
                   err=True)
    settings = PortalSettings(warehouse=config.warehouse, accounts=config.portal_accounts,
                              cache=config.output / "portal-cache", alerts=config.alerts, https=https,
                              session_hours=config.session_hours)
    uvicorn.run(create_app(settings), host=host, port=port, ssl_certfile=certfile, ssl_keyfile=keyfile,
                log_level="info", proxy_headers=False, server_header=False)


# -- the portal's accounts: organisations, users, the audit log ------------------------------------

_ORG_TYPES_HELP = "local_agency, payment_office, regional_service or national_service"
_SCOPE_HELP = "national, region_2005:25,23, region_2016:Normandie, department:14,50 (codes or names)"


def _accounts(config_path: str | None):
    """The portal's accounts file (the configuration's portal.database, default <output>/portal.sqlite)."""
    from pilotage.portal.accounts import Accounts

    return Accounts(_config(config_path).portal_accounts)


def _operator() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 -- no user name: say so
        return "cli"


@main.group()
def orgs() -> None:
    """The portal's organisations: a name, a type and a scope, which their users see."""


@orgs.command("add")
@_config_option
@click.argument("name")
@click.option("--type", "type_", required=True, help=f"One of {_ORG_TYPES_HELP}.")
@click.option("--scope", required=True, help=f"What its users see: {_SCOPE_HELP}.")
@_guard
def orgs_add(config_path, name, type_, scope) -> None:
    """Add an organisation.

    Example: pilotage orgs add "DR Basse-Normandie" --type regional_service --scope region_2005:25
    """
    org = _accounts(config_path).add_org(name, type_, scope, by=_operator())
    click.echo(f"organisation {org.id} added: {org.name} ({org.type}, {org.scope})")


@orgs.command("import")
@_config_option
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--skip-existing", is_flag=True,
              help="Leave the organisations that exist already with the same type and scope.")
@_guard
def orgs_import(config_path, csv_file, skip_existing) -> None:
    """Add the organisations of a CSV file `name;type;scope` (UTF-8, a header line): all, or none if a line is wrong.

    Example: pilotage orgs import organisations.csv
    """
    count = _accounts(config_path).import_orgs(csv_file, skip_existing=skip_existing, by=_operator())
    click.echo(f"{count} organisation(s) added")


@orgs.command("list")
@_config_option
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@_guard
def orgs_list(config_path, fmt) -> None:
    """The organisations, their type, scope and number of users.

    Example: pilotage orgs list --format csv
    """
    from pilotage.portal.admin_cli import ORG_COLUMNS, format_orgs, org_rows

    accounts = _accounts(config_path)
    _echo_rows(org_rows(accounts.orgs(), accounts.user_counts()), ORG_COLUMNS, fmt, format_orgs)


@main.group()
def users() -> None:
    """The portal's users: an email address, an organisation and a role (reader, analyst, admin)."""


@users.command("add")
@_config_option
@click.argument("login")
@click.option("--name", default="", help="The person's name.")
@click.option("--org", required=True, help="The organisation's name or id.")
@click.option("--role", type=click.Choice(["reader", "analyst", "admin"]), default="reader", show_default=True)
@_guard
def users_add(config_path, login, name, org, role) -> None:
    """Add a user; prints the one-time password to give them (changed at the first login).

    Example: pilotage users add jean.dupont@example.org --name "Jean Dupont" --org "DR Basse-Normandie" --role analyst
    """
    from pilotage.portal.accounts import ONE_TIME_DAYS

    user, password = _accounts(config_path).add_user(login, name, org, role, by=_operator())
    click.echo(f"{user.login} added to {user.org.name} as {user.role}")
    click.echo(f"one-time password: {password}  (valid {ONE_TIME_DAYS:.0f} days, to be changed at the first login)")


@users.command("import")
@_config_option
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--passwords", "-o", "passwords_file", required=True, type=click.Path(dir_okay=False),
              help="A new file for the one-time passwords (login;one_time_password), readable by you only.")
@click.option("--skip-existing", is_flag=True,
              help="Leave the users that exist already with the same organisation and role.")
@_guard
def users_import(config_path, csv_file, passwords_file, skip_existing) -> None:
    """Add the users of a CSV file `login;name;org;role` (UTF-8, a header line): all, or none if a line is wrong.

    Each gets a one-time password, written to the --passwords file (to hand
    out, then delete), changed at the first login.

    Example: pilotage users import utilisateurs.csv -o mots-de-passe.csv
    """
    from pilotage.portal.admin_cli import import_users_with_passwords

    count = import_users_with_passwords(_accounts(config_path), csv_file, passwords_file,
                                        skip_existing=skip_existing, by=_operator())
    click.echo(f"{count} user(s) added; their one-time passwords are in {passwords_file}")


@users.command("list")
@_config_option
@click.option("--org", help="Only this organisation's users (name or id).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@_guard
def users_list(config_path, org, fmt) -> None:
    """The users: organisation, role, state (active, one-time password, disabled), last login.

    Example: pilotage users list --org "DR Basse-Normandie"
    """
    from pilotage.portal.admin_cli import USER_COLUMNS, format_users, user_rows

    _echo_rows(user_rows(_accounts(config_path).users(org)), USER_COLUMNS, fmt, format_users)


@users.command("disable")
@_config_option
@click.argument("login")
@_guard
def users_disable(config_path, login) -> None:
    """Refuse a user's logins from now on; closes their sessions, revokes their API tokens.

    Example: pilotage users disable jean.dupont@example.org
    """
    _accounts(config_path).disable_user(login, by=_operator())
    click.echo(f"{login.strip().lower()} disabled: sessions closed, API tokens revoked")


@users.command("enable")
@_config_option
@click.argument("login")
@_guard
def users_enable(config_path, login) -> None:
    """Accept a disabled user's logins again (their former API tokens stay revoked).

    Example: pilotage users enable jean.dupont@example.org
    """
    _accounts(config_path).enable_user(login, by=_operator())
    click.echo(f"{login.strip().lower()} enabled")


@users.command("reset")
@_config_option
@click.argument("login")
@_guard
def users_reset(config_path, login) -> None:
    """A new one-time password for a user (forgotten password, lockout); closes their sessions.

    Example: pilotage users reset jean.dupont@example.org
    """
    from pilotage.portal.accounts import ONE_TIME_DAYS

    password = _accounts(config_path).reset_password(login, by=_operator())
    click.echo(f"one-time password for {login.strip().lower()}: {password}  "
               f"(valid {ONE_TIME_DAYS:.0f} days, to be changed at the first login)")


@users.command("token")
@_config_option
@click.argument("login")
@click.option("--label", default="api", show_default=True, help="What the token is for.")
@_guard
def users_token(config_path, login, label) -> None:
    """A personal API token for a user's tools (shown once): `Authorization: Bearer <token>`.

    Example: pilotage users token jean.dupont@example.org --label "tableau de bord R"
    """
    token = _accounts(config_path).create_token(login, label)
    click.echo(token)


@main.command()
@_config_option
@click.option("--login", help="Only this user's events.")
@click.option("--event", help="Only this event: login, login_failed, logout, password_changed, query, export, ...")
@click.option("--since", help="From this date or time (UTC), or this long ago: 2006-03-14, 12h, 7d.")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@_guard
def audit(config_path, login, event, since, limit, fmt) -> None:
    """The portal's audit log (logins, failed logins, queries, exports, administration), newest first.

    Example: pilotage audit --event login_failed --since 1d
    """
    from pilotage.portal.admin_cli import AUDIT_COLUMNS, audit_rows, format_audit, parse_since

    entries = _accounts(config_path).audit_log(limit, login=login, event=event, since=parse_since(since))
    _echo_rows(audit_rows(entries), AUDIT_COLUMNS, fmt, format_audit)


if __name__ == "__main__":  # pragma: no cover
    main()
