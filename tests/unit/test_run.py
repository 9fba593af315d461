"""Reading pyinfra's tables: the change counts behind `make plan`'s exit code and the no-op check."""

from tools import run
from tools.run import count_changes, planned_changes

PLAN = """--> Detected changes:
    Operation                                             Change       Conditional Change
    Common baseline | Render /etc/hosts                   -            -
    Common baseline | Validate sshd config (sshd -t)      -            4 (n1, n2, n3, n4)
    Common baseline | Admin tools                         2 (n3, n4)   -

    Detected changes may not include every change pyinfra will execute.
"""

RESULTS = """--> Results:
    Operation                                   Hosts   Success   Error   No Change
    Common baseline | Hostname                  4       -         -       4
    Grand total                                 100     12        -       88
"""


def test_plan_counts_only_unconditional_changes():
    assert planned_changes(PLAN) == ["Common baseline | Admin tools: 2 (n3, n4)"]


def test_plan_without_changes():
    clean = PLAN.replace("2 (n3, n4)   -", "-            -")
    assert planned_changes(clean) == []


def test_plan_output_without_table_is_an_error():
    assert planned_changes("--> Disconnecting from hosts...") is None


def test_results_grand_total():
    assert count_changes(RESULTS) == 12
    assert count_changes(RESULTS.replace("100     12", "100     -")) == 0
    assert count_changes("nothing") is None


def test_command_line_inventory_and_pyinfra_arguments(monkeypatch):
    calls = []
    monkeypatch.setattr(run, "pyinfra", lambda args, name, yes=True: calls.append((args, name)) or (0, RESULTS))
    assert run.main(["apply", "local"]) == 0
    assert run.main(["apply", "local", "--inventory", "/tmp/x/local.py", "--", "--limit", "n1"]) == 0
    assert calls[0] == (["inventory/local.py", "deploy.py"], "apply-local")
    assert calls[1] == (["/tmp/x/local.py", "deploy.py", "--limit", "n1"], "apply-local")
