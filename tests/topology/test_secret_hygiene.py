"""No generated secret value appears in git history, in the apply output, or in the tree."""

import subprocess

from tests.topology.conftest import LAB, REPO, lab_secrets


def values():
    return [v for v in lab_secrets().values() if len(v) >= 16]


def test_no_secret_in_git_history():
    history = subprocess.run(["git", "log", "--all", "-p", "--no-color"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout
    assert history, "git history is empty"
    leaked = [v[:4] + "…" for v in values() if v in history]
    assert not leaked, f"secret values in git history: {leaked}"


def test_no_secret_in_apply_output():
    logs = sorted((LAB / "logs").glob("*.log"))
    assert logs, "no apply logs: run make up / make test first"
    text = "\n".join(p.read_text(errors="replace") for p in logs)
    assert "Grand total" in text or "Detected changes" in text
    leaked = [v[:4] + "…" for v in values() if v in text]
    assert not leaked, f"secret values in pyinfra output: {leaked}"


def test_no_secret_in_tracked_files():
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    files = [REPO / f for f in tracked.decode().split("\0") if f]
    blob = "\n".join(p.read_text(errors="replace") for p in files if p.is_file())
    assert not [v for v in values() if v in blob]
