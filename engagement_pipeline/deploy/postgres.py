"""A PostgreSQL cluster of the home's own: initdb once, started in the foreground as a service.

PostgreSQL refuses to run as root. When `engagement deploy up` runs as root (CI, containers), the
cluster's files belong to the unprivileged `nobody` user and every PostgreSQL program runs as that
user through `setpriv`, with one ambient capability, CAP_DAC_READ_SEARCH, so it can reach its data
folder inside a home whose parents are root's and private (0700). Run as anyone else, PostgreSQL
runs as that user and needs nothing more.

Connections: a unix socket in <home>/deploy/run (trust: only who can enter the home can reach it) and
127.0.0.1 on a free port (scram-sha-256, with a random password in <home>/deploy/postgres.password).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import time
from pathlib import Path

USER = "engagement"  # the cluster's superuser
DATABASES = ("dagster", "mlflow")
RUN_AS_WHEN_ROOT = "nobody"
SOCKET_PATH_MAX = 100  # the kernel's limit for a unix socket path is 107 bytes


class PostgresMissing(RuntimeError):
    pass


def binaries() -> Path:
    """The folder of PostgreSQL's server programs (initdb, postgres): PATH first, then Debian's layout."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise PostgresMissing(
        "PostgreSQL's server programs (initdb, postgres) are not installed: on Debian or Ubuntu "
        "`apt-get install -y postgresql` (the cluster it creates is not used), then `engagement deploy up` again."
    )


def as_service_user(argv: list[str]) -> list[str]:
    """`argv` run as the unprivileged user when we are root (PostgreSQL refuses root), else as is."""
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise PostgresMissing("running as root needs `setpriv` (util-linux) to start PostgreSQL as `nobody`")
    return [setpriv, f"--reuid={RUN_AS_WHEN_ROOT}", f"--regid={pwd.getpwnam(RUN_AS_WHEN_ROOT).pw_gid}",
            "--clear-groups", "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", *argv]  # fmt: skip


def own(path: Path) -> None:
    """Give `path` to the service user (when root), private to it."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        user = pwd.getpwnam(RUN_AS_WHEN_ROOT)
        os.chown(path, user.pw_uid, user.pw_gid)
    path.chmod(0o700)


def initdb(data: Path, password_file: Path, log: Path) -> bool:
    """Create the cluster in `data` unless it exists; True when it was created now."""
    import subprocess

    if (data / "PG_VERSION").exists():
        return False
    own(data)
    if not password_file.exists():
        password_file.write_text(secrets.token_urlsafe(24) + "\n")
        password_file.chmod(0o600)
    # initdb reads the password file as the service user: hand it a copy it can read, then remove it
    handed = data.parent / "initdb.pw"
    handed.write_text(password_file.read_text())
    if os.geteuid() == 0:
        os.chown(handed, pwd.getpwnam(RUN_AS_WHEN_ROOT).pw_uid, -1)
    handed.chmod(0o600)
    argv = [str(binaries() / "initdb"), "-D", str(data), "-U", USER, "-E", "UTF8", "--locale=C",
            "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={handed}", "--no-instructions"]  # fmt: skip
    try:
        with open(log, "ab") as out:
            done = subprocess.run(as_service_user(argv), stdout=out, stderr=subprocess.STDOUT, check=False)
    finally:
        handed.unlink(missing_ok=True)
    if done.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)  # a half-made cluster is made again next time
        raise RuntimeError(f"initdb failed (exit {done.returncode}): see {log}")
    return True


def server_command(data: Path, socket_dir: Path, port: int) -> list[str]:
    settings = ["-c", "listen_addresses=127.0.0.1", "-c", f"port={port}", "-c", f"unix_socket_directories={socket_dir}",
                "-c", "max_connections=100", "-c", "shared_buffers=64MB", "-c", "logging_collector=off"]  # fmt: skip
    return as_service_user([str(binaries() / "postgres"), "-D", str(data), *settings])


def url(socket_dir: Path, port: int, database: str) -> str:
    """A SQLAlchemy URL for `database` over the home's unix socket."""
    socket = socket_dir / f".s.PGSQL.{port}"
    if len(str(socket)) > SOCKET_PATH_MAX:
        raise RuntimeError(
            f"{socket} is longer than a unix socket path may be ({SOCKET_PATH_MAX} bytes): "
            "choose an ENGAGEMENT_HOME with a shorter path."
        )
    return f"postgresql+psycopg2://{USER}@/{database}?host={socket_dir}&port={port}"


def wait_ready(socket_dir: Path, port: int, timeout_s: float, alive) -> None:
    """Wait until the cluster accepts connections, then create the project's databases if missing."""
    import psycopg2

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            con = psycopg2.connect(host=str(socket_dir), port=port, user=USER, dbname="postgres", connect_timeout=2)
            break
        except psycopg2.OperationalError as error:
            if not alive() or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {str(error).strip()}") from None
            time.sleep(0.2)
    try:
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute("select datname from pg_database")
            present = {name for (name,) in cur.fetchall()}
            for database in DATABASES:
                if database not in present:
                    cur.execute(f'create database "{database}"')
    finally:
        con.close()
