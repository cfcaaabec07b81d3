"""vigil's DuckDB connections cap DuckDB's memory (DuckDB would otherwise fill 80 % of the machine as
cache): MEMORY_LIMIT, or VIGIL_MEMORY_LIMIT; a value that is not a memory size is refused in one line."""

from __future__ import annotations

import pytest

from vigil import warehouse


def _limit(con) -> str:
    return con.execute("SELECT current_setting('memory_limit')").fetchone()[0]


def test_the_warehouse_connection_has_vigils_memory_limit(tmp_path, monkeypatch):
    monkeypatch.delenv("VIGIL_MEMORY_LIMIT", raising=False)
    con = warehouse.connect(tmp_path / "vigil.duckdb")
    assert warehouse.MEMORY_LIMIT == "2GB" and _limit(con) == "1.8 GiB"  # DuckDB shows 2 * 10^9 bytes in GiB
    con.close()


def test_vigil_memory_limit_sets_another(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_MEMORY_LIMIT", "8GiB")
    con = warehouse.connect(tmp_path / "vigil.duckdb")
    assert _limit(con) == "8.0 GiB"
    con.close()


@pytest.mark.parametrize("value", ["lots", "2GB'; DROP SCHEMA results CASCADE; --", "-1GB", "2 parsecs"])
def test_a_limit_that_is_not_a_memory_size_is_refused_in_one_line(tmp_path, monkeypatch, value):
    monkeypatch.setenv("VIGIL_MEMORY_LIMIT", value)
    with pytest.raises(warehouse.WarehouseError) as raised:
        warehouse.connect(tmp_path / "vigil.duckdb")
    assert "VIGIL_MEMORY_LIMIT" in str(raised.value) and "\n" not in str(raised.value)
