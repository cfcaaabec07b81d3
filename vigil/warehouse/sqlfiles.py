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


def execute_file(con: duckdb.DuckDBPyConnection, sql_file: SqlFile, parameters: dict | None = None,
                 temporary: set[str] = frozenset()) -> None:
    """Run the file's statements; a statement's $name parameters are taken from `parameters` (every one
    it names must be given). `temporary`: qualified names (this file's among them) whose relations are
    built and read as temporary tables of their own (temporary_name), as build_apart does; the
    file's COMMENT ON statements are then skipped (a working dataset, not a documented relation)."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {sql_file.layer}")
    text = sql_file.path.read_text(encoding="utf-8")
    for statement in duckdb.extract_statements(text):
        query = statement.query
        named = set(_PARAMETER.findall(_strip_comments(query)))
        missing = named - set(parameters or {})
        if missing:
            raise SqlFileError(f"{sql_file.path.relative_to(DATA_ROOT)}: parameter(s) {sorted(missing)} not given")
        if temporary:
            if _strip_comments(query).lstrip().upper().startswith("COMMENT ON"):
                continue
            query = _to_temporary(query, temporary)
        try:
            con.execute(query, {k: parameters[k] for k in named} if named else None)
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


def relations_apart(layers: list[str], changed: set[str], targets: list[str]) -> list[SqlFile]:
    """The files of `layers` between one that uses a $parameter of `changed` and a relation of `targets`
    (qualified names), in build order: what build_apart builds again."""
    files = [f for layer in layers for f in layer_files(layer)]  # a layer reads only earlier layers
    texts = {f.qualified_name: _strip_comments(f.path.read_text(encoding="utf-8")) for f in files}
    deps = {name: {other for other in texts if other != name and _names(other).search(text)}
            for name, text in texts.items()}
    dirty: set[str] = set()
    for f in files:
        if set(_PARAMETER.findall(texts[f.qualified_name])) & changed or deps[f.qualified_name] & dirty:
            dirty.add(f.qualified_name)
    needed = set(targets)
    for f in reversed(files):
        if f.qualified_name in needed:
            needed |= deps[f.qualified_name]
    return [f for f in files if f.qualified_name in dirty & needed]


def build_apart(con: duckdb.DuckDBPyConnection, layers: list[str], parameters: dict, changed: set[str],
                targets: list[str]) -> dict[str, str]:
    """Build the relations `targets` (qualified names) again with `parameters`, apart from the ones already
    built: only relations_apart are built, as temporary tables of their own (temporary_name); every other
    relation they read is the one already in the layers. Returns each target's relation: its temporary
    table if built again, else itself; the caller drops those (drop_apart), the ones between are dropped
    here."""
    files = relations_apart(layers, changed, targets)
    apart = {f.qualified_name for f in files}
    for f in files:
        execute_file(con, f, parameters, apart)
    drop_apart(con, [f"temp.main.{temporary_name(name)}" for name in apart - set(targets)])
    return {t: f"temp.main.{temporary_name(t)}" if t in apart else t for t in targets}


def drop_apart(con: duckdb.DuckDBPyConnection, relations) -> None:
    """Drop the temporary tables of build_apart among `relations`."""
    for relation in relations:
        if relation.startswith("temp.main."):
            con.execute(f"DROP TABLE IF EXISTS {relation}")


def temporary_name(qualified_name: str) -> str:
    """layer.relation -> layer__relation, the temporary table build_apart builds it in."""
    return qualified_name.replace(".", "__")


def _names(qualified_name: str) -> re.Pattern:
    return re.compile(rf"(?<![\w.]){re.escape(qualified_name)}\b")


def _to_temporary(query: str, temporary: set[str]) -> str:
    """The statement with each relation of `temporary` created as, and read from, its temporary table."""
    for name in temporary:
        query = re.sub(rf"CREATE\s+OR\s+REPLACE\s+TABLE\s+{re.escape(name)}\b",
                       f"CREATE OR REPLACE TEMP TABLE {temporary_name(name)}", query, flags=re.IGNORECASE)
        query = _names(name).sub(f"temp.main.{temporary_name(name)}", query)
    return query


def _damage(con: duckdb.DuckDBPyConnection, exc: duckdb.Error):
    from vigil import warehouse  # it imports this module

    return warehouse.damage_on(con, exc)


def _strip_comments(text: str) -> str:
    """The SQL without comments and string literals, which may name relations in prose."""
    return re.sub(r"--[^\n]*|'(?:[^']|'')*'", "", text)
