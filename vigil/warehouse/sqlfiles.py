"""Run the SQL files of sql/: one relation per file, sql/<layer>/<relation>.sql builds <layer>.<relation>.

Files of a layer run in dependency order, found from the relations each file names.
Statements run one at a time so that a failure names its file and stops there; callers
wrap a whole build in one transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import duckdb

from vigil.resources import DATA_ROOT, SQL_DIR


_PARAMETER = re.compile(r"\$([A-Za-z_]\w*)")


class SqlFileError(RuntimeError):
    """A statement of a SQL file failed; the message names the file."""


@dataclass(frozen=True)
class SqlFile:
    layer: str
    relation: str
    path: Path

    @property
    def qualified_name(self) -> str:
        return f"{self.layer}.{self.relation}"


def layer_files(layer: str) -> list[SqlFile]:
    """The files of one layer, each after the files of the same layer it reads from."""
    files = {p.stem: SqlFile(layer, p.stem, p) for p in sorted((SQL_DIR / layer).glob("*.sql"))}
    texts = {name: _strip_comments(f.path.read_text(encoding="utf-8")) for name, f in files.items()}
    deps = {
        name: {other for other in files if other != name
               and re.search(rf"\b{re.escape(layer)}\.{re.escape(other)}\b", text)}
        for name, text in texts.items()
    }
    ordered: list[SqlFile] = []
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in path:
            raise SqlFileError(f"sql/{layer}: circular dependency {' -> '.join(path + (name,))}")
        for dep in sorted(deps[name]):
            visit(dep, path + (name,))
        done.add(name)
        ordered.append(files[name])

    for name in files:
        visit(name, ())
    return ordered


def sql_file(layer: str, relation: str) -> SqlFile:
    """The file that builds <layer>.<relation>, for running one file on its own."""
    return SqlFile(layer, relation, SQL_DIR / layer / f"{relation}.sql")


def execute_file(con: duckdb.DuckDBPyConnection, sql_file: SqlFile, parameters: dict | None = None) -> None:
    """Run the file's statements; a statement's $name parameters are taken from `parameters` (every one
    it names must be given)."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {sql_file.layer}")
    text = sql_file.path.read_text(encoding="utf-8")
    for statement in duckdb.extract_statements(text):
        named = set(_PARAMETER.findall(_strip_comments(statement.query)))
        missing = named - set(parameters or {})
        if missing:
            raise SqlFileError(f"{sql_file.path.relative_to(DATA_ROOT)}: parameter(s) {sorted(missing)} not given")
        try:
            con.execute(statement.query, {k: parameters[k] for k in named} if named else None)
        except duckdb.Error as exc:
            # A block of the warehouse that cannot be read is the file's damage, not the SQL file's fault.
            raise _damage(con, exc) or SqlFileError(f"{sql_file.path.relative_to(DATA_ROOT)}: {exc}") from exc


def build_layer(con: duckdb.DuckDBPyConnection, layer: str, parameters: dict | None = None) -> list[str]:
    """Run every file of the layer with the given $parameters; return the relations built, in order."""
    built = []
    for file in layer_files(layer):
        execute_file(con, file, parameters)
        built.append(file.qualified_name)
    return built


def _damage(con: duckdb.DuckDBPyConnection, exc: duckdb.Error):
    from vigil import warehouse  # it imports this module

    return warehouse.damage_on(con, exc)


def _strip_comments(text: str) -> str:
    """The SQL without comments and string literals, which may name relations in prose."""
    return re.sub(r"--[^\n]*|'(?:[^']|'')*'", "", text)
