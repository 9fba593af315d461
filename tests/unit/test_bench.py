"""Unit tests for the benchmark and drill helpers (bench/): statistics and output parsing, no hosts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from bench import common, converge, http_path, realtime, report


def test_percentile_nearest_rank():
    values = list(range(1, 101))
    assert common.percentile(values, 50) == 50
    assert common.percentile(values, 95) == 95
    assert common.percentile(values, 99) == 99
    assert common.percentile(values, 100) == 100
    assert common.percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        common.percentile([], 50)


def test_summary_in_milliseconds():
    s = common.summary_ms([0.001 * i for i in range(1, 201)])
    assert s == {"n": 200, "p50": 100.0, "p95": 190.0, "p99": 198.0, "max": 200.0}


def test_ratio():
    assert common.ratio(3, 2) == 1.5
    assert common.ratio(1, 0) is None


@pytest.mark.parametrize("n,parts,expected", [(2000, 2, [1000, 1000]), (7, 3, [3, 2, 2]), (1, 4, [1])])
def test_split_subscribers_over_processes(n, parts, expected):
    assert realtime.split(n, parts) == expected
    assert sum(realtime.split(n, parts)) == n


def test_tokens_are_hs256_jwts_that_verify():
    token = realtime.jwt({"sub": "bench1", "channel": "project:x"}, "s3cret")
    head, body, sig = token.split(".")
    expected = hmac.new(b"s3cret", f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(sig + "==") == expected
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    assert claims["sub"] == "bench1" and claims["channel"] == "project:x" and claims["exp"] > 0


H2LOAD = """starting benchmark...
finished in 15.00s, 812.40 req/s, 160.12KB/s
requests: 12186 total, 12186 started, 12186 done, 12180 succeeded, 6 failed, 6 errored, 0 timeout
status codes: 12180 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 2.35MB (2459520) total, 1.39MB (1462320) headers (space savings 0.00%), 596.35KB (610660) data
"""


def test_parse_h2load_summary_and_log():
    log_lines = "\n".join(f"{1000 + i}\t200\t{(i + 1) * 1000}" for i in range(100)) + "\n55\t-1\t3000\n"
    r = http_path.parse_h2load(H2LOAD, log_lines)
    assert r["rps"] == 812.40 and r["done"] == 12186 and r["failed"] == 6 and r["non_2xx"] == 0
    assert r["samples"] == 101
    assert r["p50"] == 50.0 and r["p95"] == 95.0 and r["p99"] == 99.0


def test_parse_h2load_without_output():
    r = http_path.parse_h2load("", "")
    assert r["rps"] is None and r["samples"] == 0 and "p95" not in r


DEBUG = """    [pyinfra.api.facts] Getting fact: deb.DebPackages () (ensure_hosts: None)
    [pyinfra.connectors.ssh] Running command on n1: (pty=False) sudo -H -n sh -c 'dpkg -l'
    [pyinfra.connectors.ssh] Running command on n2: (pty=False) sudo -H -n sh -c 'systemctl is-enabled caddy'
    [pyinfra.connectors.ssh] Running command on n1: (pty=False) sudo -H -n sh -c 'dpkg -l'
    [pyinfra.connectors.ssh] Running command on n1: (pty=False) sudo -H -n sh -c 'echo ***'
    [pyinfra.connectors.ssh] Running command on n1: (pty=False) sh -c 'stat /etc/motd'\x1b[0m
    [pyinfra.connectors.ssh] Running command on n2: (pty=False) sudo -H -n sh -c 'cat <<EOF
"""


def test_fact_commands_from_pyinfra_debug_log():
    cmds = converge.fact_commands(DEBUG)
    assert cmds == {"n1": ["sh -c 'dpkg -l'", "sh -c 'stat /etc/motd'"], "n2": ["sh -c 'systemctl is-enabled caddy'"]}
    script = converge.hand_script(cmds["n1"])
    assert script.splitlines() == ["f=0", "sh -c 'dpkg -l' >/dev/null 2>&1 </dev/null || f=$((f+1))",
                                   "sh -c 'stat /etc/motd' >/dev/null 2>&1 </dev/null || f=$((f+1))",
                                   'echo "nonzero=$f"']


def test_changes_of_the_last_results_table():
    out = ("    Grand total   40   32   -   8\n" + "...\n" + "    Grand total   397   291   -   106\n")
    assert converge.last_changes(out) == 291
    assert converge.last_changes("    Grand total   397   -   -   397\n") == 0
    assert converge.last_changes("no table") is None


def test_report_table_marks_targets():
    rows = report.table([
        common.figure("a", 1, "s", "by hand", target="<= 2", ok=True),
        common.figure("b", 3, "x", "a | b", target="<= 2", ok=False),
        common.figure("c", "v", "", "plain"),
    ])
    assert rows[2] == "| a | 1 s | <= 2: met | by hand |"
    assert rows[3] == "| b | 3 x | <= 2: **not met** | a / b |"
    assert rows[4] == "| c | v |  | plain |"
