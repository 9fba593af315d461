"""The baseline every host gets: names, accounts, sshd, firewall, upkeep."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd

from codeb import derive
from codeb.render import render
from roles.files import put as _put
from roles.topology import group_addrs, platform_hosts

ADMIN_GROUP = "platform-admins"
PACKAGES = [
    "openssh-server", "sudo", "nftables", "unattended-upgrades", "apt-listchanges",
    "systemd-timesyncd", "prometheus-node-exporter", "ca-certificates",
]


def firewall(data, groups, addrs) -> list[dict]:
    return derive.firewall_rules(groups, data.firewall_services, addrs, data.admin_networks)


def rendered_files(data, name: str, groups, addrs, hosts) -> dict[str, tuple[str, str]]:
    """dest -> (content, mode) for one host; pure, so unit tests render it for any inventory."""
    out = {
        "/etc/hosts": (
            render("common/hosts.j2", fqdn=derive.fqdn(name, data.platform_domain), hostname=name,
                   entries=derive.etc_hosts_entries(hosts, data.platform_domain)),
            "644",
        ),
        "/etc/ssh/sshd_config.d/10-platform.conf": (render("common/sshd.conf.j2", ssh_group=data.ssh_group), "600"),
        "/etc/nftables.conf": (
            render("common/nftables.conf.j2", rules=firewall(data, groups, addrs),
                   forward_networks=data.get("container_networks") or []),
            "755",
        ),
        "/etc/systemd/journald.conf.d/10-platform.conf": (
            render("common/journald.conf.j2", max_use=data.journald_max_use,
                   max_retention=data.journald_max_retention),
            "644",
        ),
        "/etc/apt/apt.conf.d/20auto-upgrades": (
            render("common/auto-upgrades.conf.j2", reboot=data.unattended_upgrades_reboot), "644"),
        "/etc/sudoers.d/platform": (render("common/sudoers.j2", admin_group=ADMIN_GROUP), "440"),
    }
    return out


@deploy("Accounts: admins and the deploy account")
def accounts():
    data = host.data
    files_ = rendered_files(data, host.name, host.groups, group_addrs(), platform_hosts())
    server.group(name=f"Group {data.ssh_group}", group=data.ssh_group, system=True)
    server.group(name=f"Group {ADMIN_GROUP}", group=ADMIN_GROUP, system=True)
    apt_source()
    apt.packages(name="sudo", packages=["sudo"], update=True, cache_time=3600)
    sudoers = _put("/etc/sudoers.d/platform", *files_["/etc/sudoers.d/platform"])
    server.shell(name="Validate sudoers (visudo -c)", commands=["visudo -cq"], _if=sudoers.did_change)
    server.user(
        name=f"Account {data.deploy_user}",
        user=data.deploy_user, shell="/bin/bash", home=f"/home/{data.deploy_user}",
        groups=[data.ssh_group, ADMIN_GROUP], public_keys=[data.deploy_ssh_public_key], delete_keys=True,
    )
    for person in data.team:
        if person["role"] == "admin":
            server.user(
                name=f"Admin account {person['name']}",
                user=person["name"], shell="/bin/bash", home=f"/home/{person['name']}",
                groups=[data.ssh_group, ADMIN_GROUP], public_keys=person.get("ssh_keys", []), delete_keys=True,
            )
        else:
            # Developers and viewers get no shell on the servers.
            server.user(name=f"No account for {person['role']} {person['name']}", user=person["name"], present=False)


@deploy("Apt source")
def apt_source():
    data = host.data
    if data.get("apt_proxy"):
        _put("/etc/apt/apt.conf.d/01platform-proxy",
             render("common/apt-proxy.conf.j2", proxy=data.apt_proxy), "644")
    else:
        files.file(name="No apt proxy", path="/etc/apt/apt.conf.d/01platform-proxy", present=False)


@deploy("Common baseline")
def common():
    data = host.data
    files_ = rendered_files(data, host.name, host.groups, group_addrs(), platform_hosts())

    server.hostname(name="Hostname", hostname=host.name)
    _put("/etc/hosts", *files_["/etc/hosts"])

    accounts()
    apt.packages(name="Baseline packages", packages=PACKAGES, update=True, cache_time=3600,
                 no_recommends=True)
    if data.get("admin_tools"):
        # Clients admins (and the topology tests) use to check services from a host.
        apt.packages(name="Admin tools", packages=data.admin_tools, cache_time=3600, no_recommends=True)

    sshd = _put("/etc/ssh/sshd_config.d/10-platform.conf", *files_["/etc/ssh/sshd_config.d/10-platform.conf"])
    # A config sshd rejects never reaches the running daemon.
    server.shell(name="Validate sshd config (sshd -t)", commands=["sshd -t"], _if=sshd.did_change)
    systemd.service(name="sshd running", service="ssh", running=True, enabled=True)
    systemd.service(name="Reload sshd", service="ssh", reloaded=True, _if=sshd.did_change)

    nft = _put("/etc/nftables.conf", *files_["/etc/nftables.conf"])
    server.shell(name="Validate and load firewall (nft -c, then nft -f)",
                 commands=["nft -c -f /etc/nftables.conf", "nft -f /etc/nftables.conf"], _if=nft.did_change)
    systemd.service(name="nftables enabled at boot", service="nftables", enabled=True)

    journald = _put("/etc/systemd/journald.conf.d/10-platform.conf",
                    *files_["/etc/systemd/journald.conf.d/10-platform.conf"])
    systemd.service(name="Restart journald for its limits", service="systemd-journald", restarted=True,
                    _if=journald.did_change)

    _put("/etc/apt/apt.conf.d/20auto-upgrades", *files_["/etc/apt/apt.conf.d/20auto-upgrades"])
    systemd.service(name="unattended-upgrades", service="unattended-upgrades", running=True, enabled=True)
    # Enabled; in a container it skips itself (ConditionVirtualization) and the host keeps time.
    systemd.service(name="Time sync", service="systemd-timesyncd", running=None, enabled=True)
    systemd.service(name="node-exporter (firewalled to the backup host)", service="prometheus-node-exporter",
                    running=True, enabled=True)
