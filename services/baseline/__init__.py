"""The baseline every host gets: names, accounts, sshd, firewall, upkeep."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server, systemd

from codeb import artifacts, shared
from codeb.files import put as _put
from codeb.files import put_secret
from codeb.inventory import group_addrs, mesh_peers, platform_hosts
from codeb.ops import APPLIED, applied_directory, restart_on_change
from codeb.render import templates

from . import model

render = templates(__file__)

ADMIN_GROUP = "platform-admins"
# Each service's own checker, run on the new file ({new}) before it replaces the live one.
VALIDATE = {
    "sudoers": "visudo -cqf {new}",
    # The drop-in checked as a whole sshd configuration (host keys from their default paths).
    "sshd": "sshd -t -f {new}",
    "nftables": "nft -c -f {new}",
}
SYSCTL = "/etc/sysctl.d/60-platform-private-bind.conf"
WG_CONF = "/etc/wireguard/wg0.conf"
SSHD = "/etc/ssh/sshd_config.d/10-platform.conf"
JOURNALD = "/etc/systemd/journald.conf.d/10-platform.conf"
EXPORTER = "/etc/default/prometheus-node-exporter"
NFTABLES = "/etc/nftables.conf"
PACKAGES = [
    "openssh-server", "sudo", "nftables", "unattended-upgrades", "apt-listchanges",
    "systemd-timesyncd", "prometheus-node-exporter", "ca-certificates",
]


def firewall(data, groups, addrs, public_addrs=(), minio_migration=False) -> list[dict]:
    """`minio_migration`: this storage host still runs MinIO, whose S3 port stays open to the
    app and backup hosts until they have moved to Garage (services/garage)."""
    services = dict(data.firewall_services)
    if minio_migration:
        services["minio-migration"] = {"port": data.minio_migration_port, "on": "storage", "from": ["app", "backup"]}
    return shared.firewall_rules(groups, services, addrs, data.admin_networks,
                                 public_addrs=public_addrs, private_interface=data.private_interface)


def nftables_conf(data, groups, addrs, peers, minio_migration=False) -> str:
    return render("nftables.conf.j2",
                  rules=firewall(data, groups, addrs, [p["public_ip"] for p in peers], minio_migration),
                  forward_networks=data.get("container_networks") or [])


def admin_tunnels(data, groups) -> list[str]:
    """host:port of the internal UIs on this host that admins may tunnel to (PermitOpen)."""
    return sorted({f"{data.private_ip if addr == 'private' else addr}:{port}"
                   for group, uis in (data.get("admin_uis") or {}).items() if group in set(groups)
                   for addr, port in uis})


def rendered_files(data, name: str, groups, addrs, hosts, peers=None,
                   minio_migration=False) -> dict[str, tuple[str, str]]:
    """dest -> (content, mode) for one host; pure, so unit tests render it for any inventory.

    `peers` (codeb.inventory.mesh_peers) are every platform host with its private and public
    address; without them (bootstrap) the private network's files are left out."""
    peers = peers or []
    out = {
        "/etc/hosts": (
            render("hosts.j2", fqdn=shared.fqdn(name, data.platform_domain), hostname=name,
                   entries=model.etc_hosts_entries(hosts, data.platform_domain)),
            "644",
        ),
        "/etc/ssh/sshd_config.d/10-platform.conf": (
            render("sshd.conf.j2", ssh_group=data.ssh_group, permit_open=admin_tunnels(data, groups)), "600"),
        "/etc/nftables.conf": (nftables_conf(data, groups, addrs, peers, minio_migration), "755"),
        "/etc/systemd/journald.conf.d/10-platform.conf": (
            render("journald.conf.j2", max_use=data.journald_max_use,
                   max_retention=data.journald_max_retention),
            "644",
        ),
        "/etc/apt/apt.conf.d/20auto-upgrades": (
            render("auto-upgrades.conf.j2", reboot=data.unattended_upgrades_reboot), "644"),
        "/etc/sudoers.d/platform": (render("sudoers.j2", admin_group=ADMIN_GROUP), "440"),
        "/etc/sysctl.d/60-platform-private-bind.conf": (render("sysctl-private-bind.conf.j2"), "644"),
        "/etc/default/prometheus-node-exporter": (
            render("node-exporter.default.j2", listen=f"{data.private_ip}:{data.node_exporter_port}"), "644"),
    }
    if peers and data.private_interface == "wg0":
        wg = model.wireguard_config(name, peers, data.secrets[shared.SECRET_WIREGUARD_SEED], data.wireguard_port,
                                     data.private_network)
        out["/etc/wireguard/wg0.conf"] = (render("wg0.conf.j2", **wg), "600")
    return out


@deploy("Private network")
def private_network(files_):
    """The WireGuard mesh (wg-quick@wg0), unless the environment's private network is a
    provider VPC (`private_interface` other than wg0). Hosts without the kernel module (the
    lab) get the pinned userspace implementation; wg-quick falls back to it by itself."""
    data = host.data
    _put(SYSCTL, *files_[SYSCTL])
    restart_on_change("Apply sysctl (non-local bind)", [SYSCTL], f"sysctl -q -p {SYSCTL}",
                      marker=f"{APPLIED}/sysctl-private-bind")
    if data.private_interface != "wg0":
        return
    apt.packages(name="WireGuard tools", packages=["wireguard-tools"], cache_time=3600, no_recommends=True)
    pin = data.get("wireguard_userspace")
    if pin:
        artifacts.install(artifacts.lookup(pin, "wireguard-go"), "/usr/local/bin/wireguard-go")
    else:
        files.file(name="No userspace WireGuard (kernel module)", path="/usr/local/bin/wireguard-go", present=False)
    files.directory(name="/etc/wireguard", path="/etc/wireguard", user="root", group="root", mode="700")
    put_secret(WG_CONF, files_[WG_CONF][0], "600")
    systemd.service(name="wg-quick@wg0 (private network)", service="wg-quick@wg0", running=True, enabled=True)
    # Peers come and go without taking the interface down (wg syncconf).
    restart_on_change("Reload wg0 peers", [WG_CONF], "systemctl reload wg-quick@wg0", marker=f"{APPLIED}/wg0.reload",
                      validate="wg-quick strip wg0 > /dev/null")


@deploy("Accounts: admins and the deploy account")
def accounts():
    data = host.data
    files_ = rendered_files(data, host.name, host.groups, group_addrs(), platform_hosts())
    server.group(name=f"Group {data.ssh_group}", group=data.ssh_group, system=True)
    server.group(name=f"Group {ADMIN_GROUP}", group=ADMIN_GROUP, system=True)
    apt_source()
    apt.packages(name="sudo", packages=["sudo"], update=True, cache_time=3600)
    # A sudoers file visudo rejects would lock everyone out (root login is disabled): it is
    # checked before it replaces the live one.
    _put("/etc/sudoers.d/platform", *files_["/etc/sudoers.d/platform"], validate=VALIDATE["sudoers"])
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
             render("apt-proxy.conf.j2", proxy=data.apt_proxy), "644")
    else:
        files.file(name="No apt proxy", path="/etc/apt/apt.conf.d/01platform-proxy", present=False)


@deploy("Common baseline")
def common(minio_migration: bool = False):
    """`minio_migration`: this storage host still runs MinIO (deploy.py): its port stays open."""
    data = host.data
    files_ = rendered_files(data, host.name, host.groups, group_addrs(), platform_hosts(), mesh_peers(),
                            minio_migration=minio_migration)

    server.hostname(name="Hostname", hostname=host.name)
    applied_directory()
    _put("/etc/hosts", *files_["/etc/hosts"])

    accounts()
    apt.packages(name="Baseline packages", packages=PACKAGES, update=True, cache_time=3600,
                 no_recommends=True)
    if data.get("admin_tools"):
        # Clients admins (and the topology tests) use to check services from a host.
        apt.packages(name="Admin tools", packages=data.admin_tools, cache_time=3600, no_recommends=True)

    # A config sshd rejects never reaches the running daemon, nor the disk.
    _put(SSHD, *files_[SSHD], validate=VALIDATE["sshd"])
    systemd.service(name="sshd running", service="ssh", running=True, enabled=True)
    restart_on_change("Check and reload sshd", [SSHD], "systemctl reload ssh", validate="sshd -t",
                      marker=f"{APPLIED}/sshd.reload")

    load_firewall(files_["/etc/nftables.conf"][0])
    systemd.service(name="nftables enabled at boot", service="nftables", enabled=True)

    private_network(files_)

    _put(JOURNALD, *files_[JOURNALD])
    restart_on_change("Restart journald for its limits", [JOURNALD], "systemctl restart systemd-journald",
                      marker=f"{APPLIED}/journald.restart")

    _put("/etc/apt/apt.conf.d/20auto-upgrades", *files_["/etc/apt/apt.conf.d/20auto-upgrades"])
    systemd.service(name="unattended-upgrades", service="unattended-upgrades", running=True, enabled=True)
    # Enabled; in a container it skips itself (ConditionVirtualization) and the host keeps time.
    systemd.service(name="Time sync", service="systemd-timesyncd", running=None, enabled=True)
    _put(EXPORTER, *files_[EXPORTER])
    systemd.service(name="node-exporter (private address, firewalled to the backup host)",
                    service="prometheus-node-exporter", running=True, enabled=True)
    restart_on_change("Restart node-exporter for its address", [EXPORTER], "systemctl restart prometheus-node-exporter",
                      marker=f"{APPLIED}/node-exporter.restart")


def load_firewall(content: str):
    """Checked before it replaces the live file: a bad one would fail the next boot open."""
    _put(NFTABLES, content, "755", validate=VALIDATE["nftables"])
    restart_on_change("Check and load the firewall (nft -f)", [NFTABLES], f"nft -f {NFTABLES}",
                      validate=f"nft -c -f {NFTABLES}", marker=f"{APPLIED}/nftables.load")


def close_minio_port():
    """The firewall without MinIO's port (end of the MinIO migration, roles/storage/garage.py)."""
    load_firewall(nftables_conf(host.data, host.groups, group_addrs(), mesh_peers()))
