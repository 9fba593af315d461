"""The GitHub Actions workflows pass actionlint and keep the deploy's safety properties."""

import re
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
    assert "secrets.AGE_IDENTITY_PRODUCTION" in text and "secrets.DEPLOY_SSH_KEY_PRODUCTION" in text


def test_pull_requests_run_the_readme_test_command_and_plan_staging():
    ci = (REPO / ".github" / "workflows" / "ci.yml").read_text()
    assert ".ci/run" in ci and "make test-unit" in ci and "make plan ENV=staging" in ci
    assert "make test" in (REPO / ".ci" / "run").read_text()


# Environments whose deployment protection requires a reviewer (repository settings):
# a pull request's code runs with their secrets only after someone approved it.
GATED_FOR_PULL_REQUESTS = {"staging-plan"}
SECRET = re.compile(r"secrets\.([A-Za-z0-9_]+)")


def workflows():
    for path in WORKFLOWS:
        doc = yaml.safe_load(path.read_text())
        yield path.name, doc.get(True, doc.get("on")), doc["jobs"]


def test_pull_request_jobs_hold_no_secret_outside_a_gated_environment():
    checked = 0
    for name, triggers, jobs in workflows():
        assert "pull_request_target" not in (triggers or {}), f"{name}: pull_request_target runs with secrets"
        if "pull_request" not in (triggers or {}):
            continue
        for job_name, job in jobs.items():
            used = SECRET.findall(yaml.safe_dump(job))
            checked += 1
            if used:
                env = job.get("environment")
                env = env.get("name") if isinstance(env, dict) else env
                assert env in GATED_FOR_PULL_REQUESTS, f"{name}:{job_name} uses {used} outside a gated environment"
    assert checked >= 3


def test_every_secret_belongs_to_the_environment_of_its_job():
    """One deploy key and one age identity per environment: a job's secrets carry its environment's name."""
    for name, _, jobs in workflows():
        for job_name, job in jobs.items():
            used = set(SECRET.findall(yaml.safe_dump(job))) - {"GITHUB_TOKEN"}
            if not used:
                continue
            env = job.get("environment")
            env = env.get("name") if isinstance(env, dict) else env
            assert env, f"{name}:{job_name} uses {used} without an environment"
            suffix = env.split("-")[0].upper()
            assert all(s.endswith("_" + suffix) for s in used), (name, job_name, env, used)
