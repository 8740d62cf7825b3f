"""The lake: the warehouse's star schema exported as Hive-partitioned Parquet, for other engines (issue #7)."""

from pilotage.lake.export import TABLES, ExportResult, export_lake

__all__ = ["TABLES", "ExportResult", "export_lake"]
