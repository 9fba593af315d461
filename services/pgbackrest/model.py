"""Derivations of pgBackRest: archive command, TLS authorisation, pgbackrest.conf sections."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from codeb.shared import pgbackrest_repo_host

PGBACKREST_CONF = "/etc/pgbackrest/pgbackrest.conf"


PGBACKREST_TLS_DIR = "/etc/pgbackrest/tls"


def pgbackrest_archive_command(stanza: str) -> str:
    """PostgreSQL's archive_command: pgBackRest pushes each WAL segment (asynchronously,
    in batches, through its spool) to the repository host."""
    return f"pgbackrest --stanza={stanza} archive-push %p"


def pgbackrest_tls_auth(client_cns: Iterable[str], stanza: str) -> list[str]:
    """tls-server-auth values: which client certificate (by CN) may use which stanza."""
    return [f"{cn}={stanza}" for cn in sorted(set(client_cns))]


def pgbackrest_conf(role: str, *, stanza: str, private_ip: str, tls_port: int, peer_names: list[str],
                    pg_path: str, pg_port: int, settings: Mapping[str, object],
                    tls_dir: str = PGBACKREST_TLS_DIR) -> dict[str, dict[str, str]]:
    """pgbackrest.conf as {section: {option: value}} for a database host (`role="pg"`,
    peer_names = [repository host name]) or the repository host (`role="repo"`,
    peer_names = database host names). TLS both ways: each host runs `pgbackrest server`
    on its private address and accepts only the peer certificates' CNs for the stanza."""
    tls = {"ca-file": f"{tls_dir}/ca.crt", "cert-file": f"{tls_dir}/host.crt", "key-file": f"{tls_dir}/host.key"}
    glob: dict[str, str] = {
        "log-level-console": "info",
        "log-level-file": "detail",
        "log-path": "/var/log/pgbackrest",
        "compress-type": str(settings.get("compress_type", "zst")),
        "compress-level": str(settings.get("compress_level", 3)),
        "process-max": str(settings.get("process_max", 2)),
        "tls-server-address": private_ip,
        "tls-server-port": str(tls_port),
        **{f"tls-server-{k}": v for k, v in tls.items()},
    }
    stanza_opts: dict[str, str] = {}
    if role == "pg":
        repo = pgbackrest_repo_host(peer_names)
        glob.update({
            "archive-async": "y",
            "spool-path": "/var/spool/pgbackrest",
            # If the repository is unreachable this long, WAL is dropped rather than filling
            # the database disk (PITR then needs a new full backup): data, see all.py.
            "archive-push-queue-max": str(settings.get("archive_push_queue_max", "4GiB")),
            "repo1-host": repo,
            "repo1-host-type": "tls",
            "repo1-host-port": str(tls_port),
            **{f"repo1-host-{k}": v for k, v in tls.items()},
            "tls-server-auth": ",".join(pgbackrest_tls_auth([repo], stanza)),
        })
        stanza_opts = {"pg1-path": pg_path, "pg1-port": str(pg_port), "pg1-socket-path": "/var/run/postgresql"}
    elif role == "repo":
        glob.update({
            "repo1-path": str(settings["repo_path"]),
            "repo1-retention-full-type": "count",
            "repo1-retention-full": str(settings["retention_full"]),
            "repo1-bundle": "y",
            "repo1-block": "y",
            "start-fast": "y",
            "archive-timeout": str(settings.get("archive_check_timeout", 120)),
            "tls-server-auth": ",".join(pgbackrest_tls_auth(peer_names, stanza)),
        })
        for i, name in enumerate(sorted(peer_names), start=1):
            stanza_opts.update({
                f"pg{i}-host": name, f"pg{i}-host-type": "tls", f"pg{i}-host-port": str(tls_port),
                **{f"pg{i}-host-{k}": v for k, v in tls.items()},
                f"pg{i}-path": pg_path, f"pg{i}-port": str(pg_port),
            })
    else:
        raise ValueError(f"pgbackrest: unknown role {role!r}")
    return {"global": glob, stanza: stanza_opts}
