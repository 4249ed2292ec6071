"""The Vagrant backend: parsing and box making without a VM, then the real thing.

The `vm` test drives the CLI as a user would: `invoke lab.up --backend vagrant`, the seed
scenario through Vagrant, `invoke lab.destroy --backend vagrant`, and checks that no qemu,
libvirt domain or volume of its lab is left behind (it cleans up even when it fails).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.config import Settings, from_environment, load_settings
from lab.errors import LabError
from lab.host import processes_of
from lab.image.build import Image
from lab.vm.vagrant.backend import parse_ssh_config
from lab.vm.vagrant.box import BOX_VAGRANTFILE, Box, box_catalog, box_metadata, box_name, write_box
from lab.vm.vagrant.libvirt import (
    domain_files,
    network_xml,
    parse_vol_list,
)
from lab.vm.vagrant.vagrantfile import (
    kernel_cmdline,
    settings_environment,
    settings_for_vagrantfile,
    vagrantfile_config,
)
from tests.helpers import INVOKE, REPO

# `vagrant ssh-config` of a lab machine, as vagrant 2.3.4 with vagrant-libvirt 0.11.2 prints it.
SSH_CONFIG = """\
Host pytest-1234
  HostName 192.168.126.166
  User root
  Port 22
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  PasswordAuthentication no
  IdentityFile /root/.cache/fentry-lab/keys/client_ed25519
  IdentitiesOnly yes
  LogLevel FATAL

"""


# -- `vagrant ssh-config` ----------------------------------------------------------------


def test_ssh_config_gives_host_port_user_and_key() -> None:
    config = parse_ssh_config(SSH_CONFIG)
    assert (config.host, config.port, config.user) == ("192.168.126.166", 22, "root")
    assert config.identity_files == ("/root/.cache/fentry-lab/keys/client_ed25519",)


def test_ssh_config_quoted_paths_other_ports_and_key_equals_value() -> None:
    text = ('Host x\n  HostName=10.1.2.3\n  Port 2200\n  User vagrant\n'
            '  IdentityFile "/home/a b/key"\n  IdentityFile /second\n'
            "Host y\n  HostName 10.9.9.9\n")
    config = parse_ssh_config(text)
    assert (config.host, config.port, config.user) == ("10.1.2.3", 2200, "vagrant")
    assert config.identity_files == ("/home/a b/key", "/second")  # the first Host block only


def test_ssh_config_without_address_says_what_vagrant_said() -> None:
    with pytest.raises(LabError) as error:
        parse_ssh_config("Host x\n  User root\n  IdentityFile /k\n")
    assert "gave no hostname" in str(error.value) and "User root" in str(error.value)
    with pytest.raises(LabError, match="port that is not a number"):
        parse_ssh_config("Host x\n  HostName h\n  User root\n  Port ssh\n  IdentityFile /k\n")


# -- boxes -------------------------------------------------------------------------------


def fake_image(directory: Path, disk_sha: str = "968d2d35fed1" + "0" * 52) -> Image:
    directory.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, object] = {
        "release": "trixie", "kernel_release": "6.12.117+deb13-cloud-amd64",
        "build_id": "ab" * 20, "packages": {"udhcpc": "1:1.37.0-6"},
        "artefacts": {"disk.qcow2": {"sha256": disk_sha, "size": 1}},
    }
    return Image(directory, manifest)


def test_box_name_carries_release_and_disk_hash_and_volume_names_follow() -> None:
    image = fake_image(Path("/nonexistent/trixie-3c8b901f18bc"))
    name = box_name(image)
    assert name == "fentry-lab-trixie-968d2d35fed1"
    box = Box(name)
    assert box.release == "trixie"
    assert box.box_volume == "fentry-lab-trixie-968d2d35fed1_vagrant_box_image_1_box.img"
    assert box.volumes[1:] == ("fentry-lab-trixie-968d2d35fed1-vmlinuz",
                               "fentry-lab-trixie-968d2d35fed1-initrd.img")


def test_box_metadata_rounds_the_virtual_size_up_to_whole_gib() -> None:
    assert box_metadata(2751463424) == {"provider": "libvirt", "format": "qcow2",
                                        "virtual_size": 3}
    assert box_metadata(1024**3)["virtual_size"] == 1
    assert box_metadata(1)["virtual_size"] == 1


def test_box_catalog_gives_the_box_a_version_and_a_file_url(tmp_path: Path) -> None:
    catalog = box_catalog("fentry-lab-trixie-0123456789ab", tmp_path / "b.box")
    version = catalog["versions"][0]  # type: ignore[index]
    assert catalog["name"] == "fentry-lab-trixie-0123456789ab"
    assert version["version"] == "1"
    assert version["providers"] == [{"name": "libvirt", "url": f"file://{tmp_path}/b.box"}]


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img (qemu-utils)")
def test_box_file_is_a_plain_tar_with_disk_metadata_and_vagrantfile(tmp_path: Path) -> None:
    image = fake_image(tmp_path / "image")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image.disk), "1536M"],
                   check=True)
    box = write_box(image, tmp_path)
    assert box.read_bytes()[:2] != b"\x1f\x8b"  # not gzip
    with tarfile.open(box, "r:") as tar:
        assert sorted(tar.getnames()) == ["Vagrantfile", "box.img", "metadata.json"]
        metadata = json.loads(tar.extractfile("metadata.json").read())  # type: ignore[union-attr]
        assert metadata == {"provider": "libvirt", "format": "qcow2", "virtual_size": 2}
        assert tar.extractfile("Vagrantfile").read().decode() == BOX_VAGRANTFILE  # type: ignore[union-attr]
        assert tar.getmember("box.img").size == image.disk.stat().st_size
    assert 'config.ssh.username = "root"' in BOX_VAGRANTFILE
    assert "insert_key = false" in BOX_VAGRANTFILE and "disabled: true" in BOX_VAGRANTFILE


# -- host checks -------------------------------------------------------------------------


def test_missing_vagrant_or_plugin_names_the_debian_packages(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import lab.host
    import lab.vm.vagrant.libvirt as host

    real_which = shutil.which
    monkeypatch.setattr("shutil.which",
                        lambda tool: None if tool == "vagrant" else real_which(tool))
    monkeypatch.setattr(lab.host, "Path", lambda *a: tmp_path / "nowhere")
    with pytest.raises(LabError) as error:
        host.check_tools()
    message = str(error.value)
    assert "vagrant (package vagrant)" in message
    assert "vagrant, vagrant-libvirt, libvirt-daemon-system, dnsmasq-base" in message

    monkeypatch.setattr(host, "require_tools", lambda tools: None)
    monkeypatch.setattr(host, "PLUGIN_FILES", (tmp_path / "none.json",))
    monkeypatch.setenv("VAGRANT_HOME", str(tmp_path))
    with pytest.raises(LabError, match=r"libvirt provider is not .*vagrant-libvirt"):
        host.check_tools()
    (tmp_path / "plugins.json").write_text('{"installed": {"vagrant-libvirt": {}}}')
    host.check_tools()  # a user-installed plugin (`vagrant plugin install`) counts too


def test_daemons_not_running_and_not_root_says_how_to_start_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import lab.vm.vagrant.libvirt as host

    monkeypatch.setattr(host, "socket_answers", lambda path: False)
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(LabError, match=r"virtlogd -d` then `libvirtd -d`|systemctl start"):
        host.ensure_daemons()


# -- libvirt parsing and the Vagrantfile's configuration ---------------------------------


def test_vol_list_and_domain_files_parse_virsh_output() -> None:
    listing = (" fentry-lab-x.img   /var/lib/libvirt/images/fentry-lab-x.img\n"
               " k-vmlinuz          /var/lib/libvirt/images/k-vmlinuz\n")
    assert parse_vol_list(listing) == {
        "fentry-lab-x.img": Path("/var/lib/libvirt/images/fentry-lab-x.img"),
        "k-vmlinuz": Path("/var/lib/libvirt/images/k-vmlinuz")}
    xml = """<domain type='qemu'><name>fentry-lab-x</name>
      <os><type>hvm</type><kernel>/p/k-vmlinuz</kernel><initrd>/p/k-initrd.img</initrd></os>
      <devices><disk type='file' device='disk'><source file='/p/fentry-lab-x.img'/></disk>
      <interface type='network'><source network='fentry-lab'/></interface></devices></domain>"""
    assert domain_files(xml) == {Path("/p/k-vmlinuz"), Path("/p/k-initrd.img"),
                                 Path("/p/fentry-lab-x.img")}


def test_network_is_isolated_with_dhcp_and_no_ping() -> None:
    xml = network_xml("fentry-lab", "192.168.126.0/24")
    assert "<forward" not in xml  # nothing routed off the host
    assert "<ip address='192.168.126.1' netmask='255.255.255.0'>" in xml
    assert "<range start='192.168.126.2' end='192.168.126.254'/>" in xml
    assert "no-ping" in xml


def test_kernel_command_line_boots_the_virtio_disk_and_asks_for_dhcp() -> None:
    line = kernel_cmdline("loglevel=7")
    assert line.startswith("root=/dev/vda rw console=ttyS0 ")
    assert "fentry_lab.net=dhcp" in line.split() and "net.ifnames=0" in line.split()
    assert line.endswith(" loglevel=7") and "panic=" not in line


def test_settings_reach_the_vagrantfile_through_the_environment(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, name="x1", cpus=3, memory=3072, kernel_args="a=b c")
    env = settings_environment(settings)
    assert env["FENTRY_LAB_CPUS"] == "3" and env["FENTRY_LAB_MEMORY"] == "3072"
    assert set(from_environment(env)) == {f.upper()[len("FENTRY_LAB_"):].lower() for f in env}
    assert load_settings(environ=env) == settings


def test_vagrantfile_config_without_an_image_names_the_fix(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, name="x2", cpus=3, memory=1024, accel="tcg")
    config = vagrantfile_config(settings)
    assert config["problem"] and "invoke image.box" in str(config["problem"])
    assert config["box"] == "" and config["box_added"] is False
    assert (config["cpus"], config["memory"], config["driver"]) == (3, 1024, "qemu")
    assert config["cpu_mode"] == "maximum" and config["domain"] == "fentry-lab-x2"
    assert config["private_key"] == str(tmp_path / "keys" / "client_ed25519")
    assert config["serial_log"] == str(tmp_path / "vagrant" / "labs" / "x2" / "serial.log")


def test_vagrantfile_reads_the_config_through_the_projects_python(tmp_path: Path) -> None:
    """What the Vagrantfile runs: `python -m lab.vm.vagrant.vagrantfile config` prints its JSON."""
    env = {**os.environ, "FENTRY_LAB_HOME": str(tmp_path), "FENTRY_LAB_NAME": "x3",
           "FENTRY_LAB_MEMORY": "1536"}
    proc = subprocess.run([sys.executable, "-m", "lab.vm.vagrant.vagrantfile", "config"], cwd=REPO,
                          env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    config = json.loads(proc.stdout)
    assert (config["name"], config["memory"]) == ("x3", 1536)
    usage = subprocess.run([sys.executable, "-m", "lab.vm.vagrant.vagrantfile", "bogus"], cwd=REPO,
                           capture_output=True, text=True, check=False)
    assert usage.returncode == 64 and "usage:" in usage.stderr


def test_vagrantfile_settings_come_from_invoke_yaml_then_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "invoke.yaml").write_text("lab:\n  memory: 3072\n  cpus: 3\n")
    for key in [k for k in os.environ if k.startswith("FENTRY_LAB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("FENTRY_LAB_CPUS", "4")
    settings = settings_for_vagrantfile(tmp_path)
    assert (settings.memory, settings.cpus) == (3072, 4)


# -- the real thing ----------------------------------------------------------------------


def lab_processes(domain: str) -> list[int]:
    return processes_of(f"guest={domain},")


def leftovers(domain: str) -> list[str]:
    """What a destroyed lab must not leave: its qemu, its domain, its volumes, and box
    volumes or a lab network that no remaining domain uses."""
    from lab.vm.vagrant.box import list_boxes
    from lab.vm.vagrant.libvirt import (
        NETWORK,
        domain_state,
        files_in_use,
        list_volumes,
        network_exists,
        network_in_use,
    )

    left = [f"qemu pid {pid}" for pid in lab_processes(domain)]
    if domain_state(domain) is not None:
        left.append(f"libvirt domain {domain}")
    volumes = list_volumes()
    used = files_in_use()
    box_volumes = {v for box in list_boxes() for v in box.volumes}
    for name, path in volumes.items():
        if name.startswith(domain) or (name in box_volumes and path not in used):
            left.append(f"volume {name}")
    if network_exists(NETWORK) and not network_in_use(NETWORK):
        left.append(f"network {NETWORK}")
    return left


@pytest.fixture()
def vagrant_lab(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    if shutil.which("vagrant") is None:
        pytest.skip("needs vagrant, vagrant-libvirt and libvirt-daemon-system")
    name = f"pytest-vg-{os.getpid()}"
    env = {**os.environ, "FENTRY_LAB_NAME": name, "FENTRY_LAB_BACKEND": "vagrant",
           "FENTRY_LAB_RESULTS": str(tmp_path / "results")}
    try:
        yield name, env
    finally:
        subprocess.run([INVOKE, "lab.destroy", "--backend", "vagrant"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600, check=False)
        domain = f"fentry-lab-{name}"
        for pid in lab_processes(domain):  # never leave a VM behind, even after a failure
            os.kill(pid, 9)


@pytest.mark.vm
def test_vagrant_lab_runs_the_seed_scenario_and_leaves_nothing(
        vagrant_lab: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    name, env = vagrant_lab

    def cli(*args: str, timeout: float = 1500) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([INVOKE, *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=timeout, check=False)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    up = cli("lab.up", "--backend", "vagrant", "--name", name)
    assert up.returncode == 0, up.stderr[-4000:]
    assert "is up under Vagrant" in up.stderr and "root@192.168." in up.stdout, up.stdout

    uname = cli("lab.ssh", "--backend", "vagrant", "--name", name, "-c", "uname -r")
    assert uname.returncode == 0 and uname.stdout.startswith("6.12."), uname

    status = cli("lab.status", "--backend", "vagrant", "--name", name)
    row = status.stdout.splitlines()[1].split()
    assert row[0] == name and row[1] == "vagrant" and row[-1] == "up", status.stdout

    run = cli("scenario", "run", "acl-basic", "--backend", "vagrant", "--name", name)
    assert run.returncode == 0, run.stdout + run.stderr[-4000:]
    assert "scenario acl-basic: PASSED" in run.stdout
    summary = json.loads((tmp_path / "results" / "acl-basic" / "latest" / "summary.json")
                         .read_text())
    assert summary["status"] == "passed" and summary["backend"] == "vagrant"
    assert summary["lab"] == name and str(summary["kernel"]).startswith("6.12.")

    logs = cli("lab.logs", "--backend", "vagrant", "--name", name)
    assert "fentry-lab: ready" in logs.stdout

    destroy = cli("lab.destroy", "--backend", "vagrant", "--name", name, timeout=600)
    assert destroy.returncode == 0, destroy.stderr
    assert leftovers(f"fentry-lab-{name}") == []
    gone = cli("lab.ssh", "--backend", "vagrant", "--name", name, "-c", "true")
    assert gone.returncode == 2 and "not running under Vagrant" in gone.stderr
