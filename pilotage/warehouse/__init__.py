"""The DuckDB warehouse: file handling, star-schema DDL, reference data, calendar."""

from pilotage.warehouse.store import Warehouse, WarehouseBusy, WarehouseError

__all__ = ["Warehouse", "WarehouseBusy", "WarehouseError"]
