"""Load and validate the project registry (group_data/projects.yml).

The registry is the single source of truth for projects. It is validated before
any host is contacted; every problem becomes one line naming the project and
the field, and nothing is applied while any problem remains.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
# CODEB_REGISTRY_FILE points at another file (tests of bad input use it).
REGISTRY_FILE = Path(os.environ.get("CODEB_REGISTRY_FILE", REPO / "group_data" / "projects.yml"))

# Port ranges per app environment (inclusive), from the operations manual.
PORT_RANGES = {
    "production": (4000, 4499),
    "staging": (4500, 4999),
    "preview": (5000, 5999),
}
# Release slots: blue runs on the registry port, green on the next one.
SLOTS = ("blue", "green")
# Host groups a project may be placed on.
HOST_GROUPS = ("app", "streaming", "storage", "backup")
LB_POLICIES = ("round_robin", "least_conn", "ip_hash", "cookie")
NEEDS = ("database", "redis", "bucket", "realtime")

PROJECT_KEYS = {"description", "image", "needs", "environments", "lb_policy", "group", "rate_limit"}
ENV_KEYS = {"port", "domains", "image", "tag", "group"}

# A name must be usable as a DNS label, a SQL identifier (after '-' -> '_'),
# a Redis key prefix and an S3 bucket name. Every pattern is applied with fullmatch:
# `$` alone also matches before a trailing newline, which would reach pg_hba, the
# Caddyfile and Quadlet's Image=.
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,22}[a-z0-9]$")
LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*[a-z0-9]$")
TAG_RE = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|sha256:[a-f0-9]{64})$")
# rate_limit.window: a whole number of seconds, minutes or hours (a Caddy duration).
WINDOW_RE = re.compile(r"^[1-9][0-9]{0,4}[smh]$")
RATE_LIMIT_KEYS = ("requests", "window")
RATE_LIMIT_MAX_REQUESTS = 1_000_000


class RegistryError(Exception):
    """Raised with every problem found, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class RateLimit:
    """At most `requests` requests per client IP in any sliding `window` (Caddy duration)."""

    requests: int
    window: str


@dataclass(frozen=True)
class Instance:
    """One project in one app environment: the unit everything is derived from."""

    project: str
    env: str
    port: int
    domains: tuple[str, ...]
    image: str
    tag: str
    group: str
    needs: frozenset[str]
    lb_policy: str = "round_robin"
    # Per-site rate limit (Caddy's rate_limit, keyed by client IP); None: no limit.
    rate_limit: RateLimit | None = None

    @property
    def name(self) -> str:
        return f"{self.project}-{self.env}"

    @property
    def slot_ports(self) -> dict[str, int]:
        return {slot: self.port + i for i, slot in enumerate(SLOTS)}


@dataclass
class Registry:
    instances: list[Instance] = field(default_factory=list)

    def for_envs(self, envs) -> list[Instance]:
        return [i for i in self.instances if i.env in envs]


def valid_domain(domain: str) -> bool:
    if not isinstance(domain, str) or len(domain) > 253 or "." not in domain:
        return False
    labels = domain.split(".")
    if not all(LABEL_RE.fullmatch(label) for label in labels):
        return False
    # The top-level label is alphabetic.
    return labels[-1].isalpha() and len(labels[-1]) >= 2


def _check_rate_limit(where: str, value, problems: list[str]) -> RateLimit | None:
    """The optional `rate_limit: {requests: N, window: 1m}` of a project; None when absent."""
    if value is None:
        return None
    shape = (f"field 'rate_limit' must be a mapping {{requests: <1-{RATE_LIMIT_MAX_REQUESTS}>, "
             "window: <duration like 30s, 1m, 1h>}")
    if not isinstance(value, dict):
        problems.append(f"{where}: {shape}")
        return None
    ok = True
    for key in sorted(set(value) - set(RATE_LIMIT_KEYS), key=str):
        problems.append(f"{where}: unknown key 'rate_limit.{key}' (allowed: {', '.join(RATE_LIMIT_KEYS)})")
        ok = False
    requests, window = value.get("requests"), value.get("window")
    if (not isinstance(requests, int) or isinstance(requests, bool)
            or not 1 <= requests <= RATE_LIMIT_MAX_REQUESTS):
        problems.append(f"{where}: field 'rate_limit.requests' is {requests!r}, "
                        f"must be an integer in 1-{RATE_LIMIT_MAX_REQUESTS}")
        ok = False
    if not isinstance(window, str) or not WINDOW_RE.fullmatch(window):
        problems.append(f"{where}: field 'rate_limit.window' is {window!r}, "
                        "must be a duration like 30s, 1m or 1h (a whole number and s, m or h)")
        ok = False
    return RateLimit(requests=requests, window=window) if ok else None


def _check_project(name, spec, problems: list[str]) -> list[Instance]:
    where = f"project {name!r}"
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        problems.append(
            f"{where}: name must match {NAME_RE.pattern} (DNS label, SQL identifier, Redis prefix)"
        )
        return []
    if not isinstance(spec, dict):
        problems.append(f"{where}: must be a mapping")
        return []
    for key in sorted(set(spec) - PROJECT_KEYS):
        problems.append(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(PROJECT_KEYS))})")
    description = spec.get("description", "")
    if not isinstance(description, str) or len(description) > 200 or not description.isprintable():
        problems.append(f"{where}: field 'description' must be one line of printable text (at most 200 characters)")

    needs = spec.get("needs", {}) or {}
    if not isinstance(needs, dict):
        problems.append(f"{where}: field 'needs' must be a mapping of {', '.join(NEEDS)} to true/false")
        needs = {}
    for key in sorted(set(needs) - set(NEEDS)):
        problems.append(f"{where}: unknown key 'needs.{key}' (allowed: {', '.join(NEEDS)})")
    for key, value in needs.items():
        if not isinstance(value, bool):
            problems.append(f"{where}: field 'needs.{key}' must be true or false")
    need_set = frozenset(k for k, v in needs.items() if v is True and k in NEEDS)

    lb_policy = spec.get("lb_policy", "round_robin")
    if lb_policy not in LB_POLICIES:
        problems.append(f"{where}: field 'lb_policy' is {lb_policy!r}, must be one of {', '.join(LB_POLICIES)}")
    rate_limit = _check_rate_limit(where, spec.get("rate_limit"), problems)

    default_image = spec.get("image")
    envs = spec.get("environments")
    if not isinstance(envs, dict) or not envs:
        problems.append(f"{where}: field 'environments' must map at least one of {', '.join(PORT_RANGES)}")
        return []

    instances = []
    for env, espec in envs.items():
        ewhere = f"{where} environment {env!r}"
        if env not in PORT_RANGES:
            problems.append(f"{where}: unknown environment {env!r} (allowed: {', '.join(PORT_RANGES)})")
            continue
        if not isinstance(espec, dict):
            problems.append(f"{ewhere}: must be a mapping")
            continue
        for key in sorted(set(espec) - ENV_KEYS):
            problems.append(f"{ewhere}: unknown key {key!r} (allowed: {', '.join(sorted(ENV_KEYS))})")

        port = espec.get("port")
        low, high = PORT_RANGES[env]
        if not isinstance(port, int) or isinstance(port, bool):
            problems.append(f"{ewhere}: field 'port' must be an integer in {low}-{high}")
            continue
        if not low <= port <= high:
            problems.append(f"{ewhere}: field 'port' {port} is outside the {env} range {low}-{high}")
            continue
        outside = [(slot, port + offset) for offset, slot in enumerate(SLOTS) if not low <= port + offset <= high]
        for slot, slot_port in outside:
            problems.append(
                f"{ewhere}: field 'port' {port} puts the {slot} slot on {slot_port}, outside the {env} range {low}-{high}"
            )
        if outside:
            continue

        domains = espec.get("domains")
        if not isinstance(domains, list) or not domains:
            problems.append(f"{ewhere}: field 'domains' must be a non-empty list")
            domains = []
        for domain in domains:
            if not valid_domain(domain):
                problems.append(f"{ewhere}: field 'domains' has malformed domain {domain!r}")

        image = espec.get("image", default_image)
        if not isinstance(image, str) or not IMAGE_RE.fullmatch(image) or "@" in image:
            problems.append(f"{ewhere}: field 'image' {image!r} must be a repository reference without tag")
            image = ""
        tag = espec.get("tag")
        if not isinstance(tag, str) or not TAG_RE.fullmatch(tag):
            problems.append(f"{ewhere}: field 'tag' {tag!r} must be a tag or a sha256 digest")
            tag = ""

        group = espec.get("group", spec.get("group", "app"))
        if group not in HOST_GROUPS:
            problems.append(f"{ewhere}: field 'group' names unknown host group {group!r} (known: {', '.join(HOST_GROUPS)})")

        instances.append(
            Instance(
                project=name,
                env=env,
                port=port,
                domains=tuple(d for d in domains if isinstance(d, str)),
                image=image,
                tag=tag,
                group=group,
                needs=need_set,
                lb_policy=lb_policy,
                rate_limit=rate_limit,
            )
        )
    return instances


def validate(raw) -> Registry:
    """Validate the parsed YAML document; raise RegistryError listing every problem."""
    problems: list[str] = []
    if not isinstance(raw, dict) or set(raw) != {"projects"}:
        raise RegistryError(["registry: the document must have exactly one top-level key 'projects'"])
    projects = raw["projects"]
    if not isinstance(projects, dict) or not projects:
        raise RegistryError(["registry: 'projects' must be a non-empty mapping"])

    instances: list[Instance] = []
    for name, spec in projects.items():
        instances.extend(_check_project(name, spec, problems))

    # Ports are unique per host group (every app host runs every app), slots included.
    taken: dict[tuple[str, int], str] = {}
    domains: dict[str, str] = {}
    for inst in instances:
        for slot, port in inst.slot_ports.items():
            key = (inst.group, port)
            owner = f"{inst.name}/{slot}"
            if key in taken:
                problems.append(
                    f"project {inst.project!r} environment {inst.env!r}: field 'port' {port} ({slot} slot) "
                    f"is already used by {taken[key]} on group {inst.group!r}"
                )
            else:
                taken[key] = owner
        for domain in inst.domains:
            if domain in domains:
                problems.append(
                    f"project {inst.project!r} environment {inst.env!r}: field 'domains' {domain!r} "
                    f"is already used by {domains[domain]}"
                )
            else:
                domains[domain] = inst.name

    if problems:
        raise RegistryError(problems)
    return Registry(instances=instances)


def load(path: Path | str = REGISTRY_FILE) -> Registry:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RegistryError([f"registry: {path} does not exist"]) from None
    except yaml.YAMLError as exc:
        raise RegistryError([f"registry: {path} is not valid YAML: {exc}"]) from None
    return validate(raw)
