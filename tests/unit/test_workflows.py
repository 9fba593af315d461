"""The GitHub Actions workflows pass actionlint and keep the deploy's safety properties."""

import subprocess
from pathlib import Path

import yaml

from codeb import artifacts

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def test_actionlint_accepts_every_workflow():
    # A maintained linter for Actions workflows (not packaged by Debian), built by `make artifacts`.
    tool = artifacts.lookup(artifacts.tool_pins()["actionlint"], "actionlint")
    proc = subprocess.run([str(tool.path), "-no-color", *map(str, WORKFLOWS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_deploys_never_overlap_and_production_is_protected():
    deploy = yaml.safe_load((REPO / ".github" / "workflows" / "deploy.yml").read_text())
    assert deploy["concurrency"] == {"group": "deploy-platform", "cancel-in-progress": False}
    jobs = deploy["jobs"]
    assert jobs["production"]["needs"] == "staging"
    assert jobs["production"]["environment"] == "production"
    # Secrets come from the repository's secrets, never from the tree.
    text = (REPO / ".github" / "workflows" / "deploy.yml").read_text()
    assert "secrets.AGE_IDENTITY_PRODUCTION" in text and "secrets.DEPLOY_SSH_KEY" in text


def test_pull_requests_run_the_readme_test_command_and_plan_staging():
    ci = (REPO / ".github" / "workflows" / "ci.yml").read_text()
    assert ".ci/run" in ci and "make test-unit" in ci and "make plan ENV=staging" in ci
    assert "make test" in (REPO / ".ci" / "run").read_text()
