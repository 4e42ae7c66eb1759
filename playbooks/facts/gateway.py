"""Facts for the gateway deploy: which secrets a host already holds, and its local PostgreSQL.

Both commands exit 0 whatever the host's state (absent file, PostgreSQL not installed or not
running), so a fresh host reports "nothing yet" instead of failing fact gathering. Neither ever
prints a secret: :class:`EnvFileKeys` reports the *names* of an environment file's variables, never
their values. The parsing lives in module functions the tests call on captured output.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pyinfra.api import FactBase

ABSENT_MARKER = "@@llmkit-file-absent"
NO_POSTGRES_MARKER = "@@llmkit-postgres-absent"
POSTGRES_DOWN_MARKER = "@@llmkit-postgres-down"
_SEPARATOR = "|"


def parse_env_keys(lines: Iterable[str]) -> frozenset[str] | None:
    """The variable names of an environment file (``NAME=...`` lines); None when it is absent."""
    names = [line.strip() for line in lines if line.strip()]
    if ABSENT_MARKER in names:
        return None
    return frozenset(n for n in names if n.replace("_", "").isalnum())


class EnvFileKeys(FactBase[frozenset[str] | None]):
    """Names of the variables an environment file sets (None: no such file). Values never leave the host."""

    def command(self, path: str) -> str:
        quoted = shlex.quote(path)
        return (
            f"if [ -f {quoted} ]; then sed -n 's/^\\([A-Za-z_][A-Za-z0-9_]*\\)=.*/\\1/p' {quoted}; "
            f"else echo {ABSENT_MARKER}; fi"
        )

    def process(self, output: list[str]) -> frozenset[str] | None:
        return parse_env_keys(output)


@dataclass(frozen=True)
class PostgresState:
    """What the gateway deploy needs to know of the host's PostgreSQL."""

    installed: bool
    running: bool
    settings: dict[str, str] = field(default_factory=dict)
    roles: frozenset[str] = frozenset()
    databases: frozenset[str] = frozenset()


def parse_postgres_state(lines: Iterable[str]) -> PostgresState:
    """``kind|name|value`` rows of :class:`LocalPostgres`'s query, or one of its markers."""
    rows = [line.strip() for line in lines if line.strip()]
    if NO_POSTGRES_MARKER in rows:
        return PostgresState(installed=False, running=False)
    if POSTGRES_DOWN_MARKER in rows:
        return PostgresState(installed=True, running=False)
    settings: dict[str, str] = {}
    roles: set[str] = set()
    databases: set[str] = set()
    for row in rows:
        kind, _, rest = row.partition(_SEPARATOR)
        name, _, value = rest.partition(_SEPARATOR)
        if kind == "setting":
            settings[name] = value
        elif kind == "role":
            roles.add(name)
        elif kind == "database":
            databases.add(name)
    return PostgresState(
        installed=True,
        running=True,
        settings=settings,
        roles=frozenset(roles),
        databases=frozenset(databases),
    )


def _sql_list(values: Sequence[str]) -> str:
    for value in values:
        if not value.replace("_", "").isalnum():
            raise ValueError(f"not a plain SQL name: {value!r}")
    return ", ".join(f"'{v}'" for v in values)


def postgres_query(settings: Sequence[str], role: str, database: str) -> str:
    """The SQL of :class:`LocalPostgres`: the named settings, whether the role and database exist."""
    return (
        f"SELECT 'setting', name, setting FROM pg_settings WHERE name IN ({_sql_list(settings)}) "
        f"UNION ALL SELECT 'role', rolname, '' FROM pg_roles WHERE rolname IN ({_sql_list([role])}) "
        "UNION ALL SELECT 'database', datname, '' FROM pg_database "
        f"WHERE datname IN ({_sql_list([database])})"
    )


class LocalPostgres(FactBase[PostgresState]):
    """The local PostgreSQL (as the ``postgres`` superuser over its Unix socket): settings, role, database."""

    def command(self, settings: Sequence[str], role: str, database: str) -> str:
        query = shlex.quote(postgres_query(settings, role, database))
        return (
            f"if ! command -v psql >/dev/null 2>&1; then echo {NO_POSTGRES_MARKER}; exit 0; fi; "
            f"runuser -u postgres -- psql -X -A -t -q -F '{_SEPARATOR}' -d postgres -c {query} 2>/dev/null "
            f"|| echo {POSTGRES_DOWN_MARKER}"
        )

    @staticmethod
    def default() -> PostgresState:
        return PostgresState(installed=False, running=False)

    def process(self, output: list[str]) -> PostgresState:
        return parse_postgres_state(output)
