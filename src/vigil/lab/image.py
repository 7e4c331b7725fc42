"""The lab's guest image: Debian's cloud kernel and a debootstrapped Debian with the guest sensor.

Two cached layers under ``~/.cache/vigil/lab`` (``VIGIL_LAB_CACHE``), each keyed by a hash of
its inputs and rebuilt only when they change:

* ``base-KEY``: ``debootstrap`` of the machine's configured Debian mirror with the lab's
  packages, then the cloud kernel and its initramfs (the slow part, about a minute);
* ``image-KEY``: the base copied, the lab's configuration and weaknesses applied, the guest
  sensor installed, and the tree packed into an ext4 disk image with ``mke2fs -d`` (seconds).
  Its key also covers this module, ``lab/guest/`` and the sensor's sources.

A VM boots the image's ``vmlinuz`` and ``initrd.img`` with ``root=/dev/vda``: a real systemd
boot with journald and rsyslog, sshd, cron, networkd and the guest sensor as a service.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import vigil
from vigil.errors import VigilError

#: what the guest runs: init and logging, the services the case study attacks, and what the
#: guest sensor needs (python3 and psutil from Debian)
PACKAGES = (
    "systemd-sysv", "udev", "dbus", "rsyslog", "openssh-server", "cron", "python3",
    "python3-psutil", "procps", "iproute2", "kmod", "sudo", "less", "zstd", "initramfs-tools",
)
#: the kernels a lab VM can boot: Debian's cloud kernel (the default) and its generic one, a
#: second distribution kernel for introspection to be shown on
KERNELS = {"cloud": "linux-image-cloud-amd64", "generic": "linux-image-amd64"}
#: what the initramfs loads: the root disk, the network, and ACPI's power button (the clean
#: power-down of `vigil lab down`), and ext4 (built into the cloud kernel, a module of the
#: generic one)
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "ext4", "button")
#: the account with a weak password (in ``wordlist.txt``) and the setuid misconfiguration
LAB_USER = "deploy"
LAB_PASSWORD = "sunshine"  # noqa: S105  (the lab's documented weakness)
SETUID_MISCONFIGURED = "/usr/bin/find"
IMAGE_SIZE = "2G"
#: bumped when the base layer's recipe changes in a way its inputs do not show
BASE_RECIPE = 2
KEEP_IMAGES = 2

GUEST_FILES = Path(__file__).with_name("guest")
WORDLIST = Path(__file__).with_name("wordlist.txt")
PACKAGE_ROOT = Path(vigil.__file__).parent

#: the parts of the vigil package a guest runs: the CLI (whose other commands import their
#: modules lazily) and the guest sensor; ``tests/lab`` checks they run alone
GUEST_MODULES = ("__init__.py", "cli.py", "errors.py", "sensor", "protocol/__init__.py",
                 "lab/__init__.py", "lab/cli.py", "vmi/__init__.py", "vmi/cli.py")

Progress = Callable[[str], None]


class LabError(VigilError):
    """The lab cannot do what was asked; the message says why and what to do."""


def cache_dir() -> Path:
    return Path(os.environ.get("VIGIL_LAB_CACHE") or Path.home() / ".cache" / "vigil" / "lab")


def wordlist() -> list[str]:
    return [w for w in WORDLIST.read_text().split() if w]


@dataclass(frozen=True)
class Mirror:
    uri: str
    suite: str


def _host_codename() -> str:
    text = Path("/etc/os-release").read_text()
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)", text, re.M)
    if not match:
        raise LabError("cannot tell this machine's Debian release from /etc/os-release; "
                       "give --suite and --mirror")
    return match.group(1)


def configured_mirror(suite: str | None = None, apt: Path = Path("/etc/apt")) -> Mirror:
    """The Debian mirror this machine's apt is configured with, for ``suite`` (default: the
    machine's own release). Reads deb822 ``.sources`` files and one-line ``sources.list``."""
    suite = suite or _host_codename()
    entries: list[tuple[list[str], list[str], list[str]]] = []
    for path in sorted(apt.glob("sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, list[str]] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.lstrip().startswith("#"):
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.split()
            if fields.get("enabled", ["yes"])[0].lower() != "no":
                entries.append((fields.get("types", []), fields.get("uris", []),
                                fields.get("suites", [])))
    lists = [apt / "sources.list", *sorted(apt.glob("sources.list.d/*.list"))]
    for path in lists:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(words) >= 3:
                entries.append(([words[0]], [words[1]], [words[2]]))
    for types, uris, suites in entries:
        if "deb" in types and suite in suites and uris:
            return Mirror(uris[0].rstrip("/"), suite)
    raise LabError(f"no apt source for Debian {suite!r} in /etc/apt; give --mirror URL")


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _tree_digest(*roots: Path) -> str:
    h = hashlib.sha256()
    for root in roots:
        files = [root] if root.is_file() else sorted(
            p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for path in files:
            h.update(str(path.relative_to(root.parent)).encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def _sensor_sources() -> list[Path]:
    """The parts of the vigil package a guest needs: the CLI and the guest sensor."""
    return [PACKAGE_ROOT / name for name in GUEST_MODULES]


@dataclass(frozen=True)
class Recipe:
    mirror: Mirror
    packages: tuple[str, ...] = PACKAGES

    def base_key(self) -> str:
        return _digest(BASE_RECIPE, self.mirror.uri, self.mirror.suite, self.packages,
                       KERNELS, INITRAMFS_MODULES)

    def image_key(self) -> str:
        return _digest(self.base_key(), _tree_digest(Path(__file__), GUEST_FILES, WORDLIST,
                                                     *_sensor_sources()))


@dataclass(frozen=True)
class Image:
    """A built image: the kernel, the initramfs and the root disk, and what went into them."""

    path: Path

    @property
    def kernel(self) -> Path:
        return self.path / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.path / "initrd.img"

    def boot_files(self, flavour: str = "cloud") -> tuple[Path, Path]:
        """The kernel and initramfs of one of ``KERNELS``."""
        if flavour not in KERNELS:
            raise LabError(f"no kernel {flavour!r}: one of {', '.join(KERNELS)}")
        suffix = "" if flavour == "cloud" else f"-{flavour}"
        return self.path / f"vmlinuz{suffix}", self.path / f"initrd{suffix}.img"

    @property
    def disk(self) -> Path:
        return self.path / "rootfs.img"

    @property
    def manifest(self) -> dict[str, object]:
        return dict(json.loads((self.path / "image.json").read_text()))


def _say(progress: Progress | None, message: str) -> None:
    (progress or (lambda m: print(m, file=sys.stderr, flush=True)))(message)


def _run(cmd: list[str], *, what: str, progress: Progress | None = None,
         env: dict[str, str] | None = None) -> None:
    """Run ``cmd``, showing a count of debootstrap/apt steps every few seconds, and raise with
    the end of its output if it fails."""
    started = last = time.monotonic()
    tail: list[str] = []
    counts = {"Retrieving": 0, "Extracting": 0, "Unpacking": 0, "Configuring": 0, "Setting up": 0}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})}, errors="replace")
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = [*tail[-30:], line.rstrip()]
        for word in counts:
            if word in line:
                counts[word] += 1
        now = time.monotonic()
        if now - last >= 5:
            last = now
            done = ", ".join(f"{w.lower()} {n}" for w, n in counts.items() if n)
            _say(progress, f"   {what}: {now - started:.0f} s{': ' + done if done else ''}")
    if proc.wait() != 0:
        raise LabError(f"{what} failed (exit {proc.returncode}):\n" + "\n".join(tail[-15:]))


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


class Builder:
    """Builds the image for a recipe, or finds it in the cache."""

    def __init__(self, recipe: Recipe, *, cache: Path | None = None,
                 progress: Progress | None = None) -> None:
        self.recipe = recipe
        self.cache = cache or cache_dir()
        self.progress = progress

    def say(self, message: str) -> None:
        _say(self.progress, message)

    def cached(self) -> Image | None:
        path = self.cache / f"image-{self.recipe.image_key()}"
        return Image(path) if (path / "image.json").exists() else None

    def build(self, *, force: bool = False) -> Image:
        if not force and (image := self.cached()) is not None:
            self.say(f">> lab image cached: {image.path}")
            return image
        if os.geteuid() != 0:
            raise LabError("building the lab image needs root (debootstrap, chroot); "
                           "run `sudo vigil lab build` once, later runs use the cache")
        for tool in ("debootstrap", "mke2fs"):
            if shutil.which(tool) is None:
                raise LabError(f"{tool} is not installed (Debian packages: debootstrap, "
                               "e2fsprogs; `make system-deps` installs them)")
        started = time.monotonic()
        self.cache.mkdir(parents=True, exist_ok=True)
        base = self._base(force=force)
        image = self._image(base)
        self._prune()
        self.say(f">> lab image built in {time.monotonic() - started:.0f} s: {image.path}")
        return image

    # --- layer 1: debootstrap and the kernel ---------------------------------------------------

    def _base(self, *, force: bool) -> Path:
        base = self.cache / f"base-{self.recipe.base_key()}"
        if (base / ".complete").exists() and not force:
            self.say(f"[1/3] Debian base cached: {base}")
            return base
        shutil.rmtree(base, ignore_errors=True)
        root = base / "root"
        mirror = self.recipe.mirror
        debs = self.cache / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        self.say(f"[1/3] debootstrap {mirror.suite} from the configured mirror "
                 f"({len(self.recipe.packages)} packages and their dependencies)")
        cmd = ["debootstrap", "--variant=minbase", f"--cache-dir={debs}",
               f"--include={','.join(self.recipe.packages)}"]
        keyring = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
        if keyring.exists():
            cmd.append(f"--keyring={keyring}")
        _run([*cmd, mirror.suite, str(root), mirror.uri], what="debootstrap",
             progress=self.progress)
        self.say(f"   installing {', '.join(KERNELS.values())} and their initramfs")
        conf = root / "etc/initramfs-tools"
        _write(conf / "conf.d/vigil-lab.conf", "MODULES=list\nCOMPRESS=zstd\n")
        with (conf / "modules").open("a") as modules:
            modules.write("".join(f"{m}\n" for m in INITRAMFS_MODULES))
        with _mounted_proc(root):
            _run(["chroot", str(root), "apt-get", "install", "-y", "-q", "--no-install-recommends",
                  *KERNELS.values()], what="kernels", progress=self.progress,
                 env={"DEBIAN_FRONTEND": "noninteractive"})
            _run(["chroot", str(root), "apt-get", "clean"], what="apt-get clean")
        (base / ".complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        return base

    # --- layer 2: the lab's configuration, weaknesses and the sensor --------------------------

    def _image(self, base: Path) -> Image:
        key = self.recipe.image_key()
        final = self.cache / f"image-{key}"
        work = self.cache / f".image-{key}.tmp"
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        work.mkdir(parents=True)
        root = work / "root"
        self.say("[2/3] configuring the guest: services, the lab's weaknesses, the guest sensor")
        _run(["cp", "-a", str(base / "root"), str(root)], what="copy of the base")
        configure(root)
        kernels: dict[str, str] = {}
        for flavour in KERNELS:
            # vmlinuz-6.1.0-50-cloud-amd64 or vmlinuz-6.1.0-50-amd64
            pattern = "*-cloud-amd64" if flavour == "cloud" else "*[0-9]-amd64"
            kernel = _only(root.glob(f"boot/vmlinuz-{pattern}"), f"{flavour} kernel")
            initrd = _only(root.glob(f"boot/initrd.img-{pattern}"), f"{flavour} initramfs")
            target_kernel, target_initrd = Image(work).boot_files(flavour)
            shutil.copy2(kernel, target_kernel)
            shutil.copy2(initrd, target_initrd)
            kernels[flavour] = kernel.name.removeprefix("vmlinuz-")
        manifest = {
            "key": key, "base": base.name, "vigil": vigil.__version__,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "suite": self.recipe.mirror.suite, "kernels": kernels,
            "packages": _package_versions(root),
            "user": LAB_USER, "setuid_misconfigured": SETUID_MISCONFIGURED,
        }
        self.say(f"[3/3] packing the root disk (ext4, {IMAGE_SIZE}, sparse)")
        _run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "vigil-lab", "-d", str(root),
              str(work / "rootfs.img"), IMAGE_SIZE], what="mke2fs")
        shutil.rmtree(root)
        (work / "image.json").write_text(json.dumps(manifest, indent=2) + "\n")
        work.rename(final)
        return Image(final)

    def _prune(self) -> None:
        """Keep the newest images and the bases they came from."""
        images = sorted(self.cache.glob("image-*"), key=lambda p: p.stat().st_mtime, reverse=True)
        keep_bases = {f"base-{self.recipe.base_key()}"}
        for old in images[KEEP_IMAGES:]:
            shutil.rmtree(old, ignore_errors=True)
        for image in images[:KEEP_IMAGES]:
            try:
                keep_bases.add(str(Image(image).manifest.get("base")))
            except (OSError, ValueError):
                continue
        for base in self.cache.glob("base-*"):
            if base.name not in keep_bases:
                shutil.rmtree(base, ignore_errors=True)


class _mounted_proc:
    """``/proc`` mounted in a chroot for the duration (kernel postinst scripts read it)."""

    def __init__(self, root: Path) -> None:
        self.target = root / "proc"

    def __enter__(self) -> None:
        subprocess.run(["mount", "-t", "proc", "proc", str(self.target)], check=True)

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["umount", "-l", str(self.target)], check=False)


def _only(paths: Iterable[Path], what: str) -> Path:
    found = sorted(paths)
    if len(found) != 1:
        raise LabError(f"expected one {what} in the image, found {[p.name for p in found]}")
    return found[0]


def _package_versions(root: Path) -> dict[str, str]:
    out = subprocess.run(["chroot", str(root), "dpkg-query", "-W", "-f", "${Package} ${Version}\\n",
                          *PACKAGES, *KERNELS.values(), "linux-image-*-amd64"],
                         capture_output=True, text=True, check=False).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def install_guest_payload(target: Path) -> None:
    """Copy ``GUEST_MODULES`` into ``target/vigil`` (a guest's /opt/vigil)."""
    for src in _sensor_sources():
        dest = target / "vigil" / src.relative_to(PACKAGE_ROOT)
        if src.is_dir():
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)


def configure(root: Path) -> None:
    """Turn a debootstrapped tree into the lab guest (see ``docs/lab.md``)."""
    _write(root / "etc/hostname", "vigil-lab\n")
    _write(root / "etc/hosts", "127.0.0.1 localhost\n127.0.1.1 vigil-lab\n")
    _write(root / "etc/fstab", "/dev/vda / ext4 rw,errors=remount-ro 0 1\n")
    _write(root / "etc/machine-id", "")  # a new one at every boot (or systemd.machine_id=)
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    (root / "var/log/journal").mkdir(parents=True, exist_ok=True)  # a persistent journal
    _write(root / "etc/systemd/network/10-lab.network", (GUEST_FILES / "10-lab.network").read_text())
    _write(root / "etc/ssh/sshd_config.d/lab.conf",
           "# The lab's weakness: password logins, as on too many cloud VMs.\n"
           "PasswordAuthentication yes\nPermitRootLogin prohibit-password\nUseDNS no\n"
           "HostKey /etc/ssh/ssh_host_ed25519_key\nHostKey /etc/ssh/ssh_host_ecdsa_key\n")
    # The sensor: the vigil package's guest part in /opt/vigil, its real systemd unit.
    install_guest_payload(root / "opt/vigil")
    _write(root / "usr/local/bin/vigil", (GUEST_FILES / "vigil").read_text(), 0o755)
    _write(root / "usr/local/sbin/vigil-lab-enroll",
           (GUEST_FILES / "vigil-lab-enroll").read_text(), 0o755)
    units = root / "etc/systemd/system"
    shutil.copy2(PACKAGE_ROOT / "sensor/guest/vigil-sensor-guest.service", units)
    shutil.copy2(GUEST_FILES / "vigil-lab-enroll.service", units)
    _write(units / "vigil-sensor-guest.service.d/lab.conf",
           (GUEST_FILES / "vigil-sensor-lab.conf").read_text())
    # Weaknesses: a user with a password from the attacker's wordlist, a setuid find.
    home = f"/home/{LAB_USER}"
    script = "\n".join([
        "set -e",
        f"useradd --create-home --shell /bin/bash --comment 'Deployment account' {LAB_USER}",
        f"echo '{LAB_USER}:{LAB_PASSWORD}' | chpasswd",
        "passwd --lock root >/dev/null",
        f"chmod u+s {SETUID_MISCONFIGURED}",
        "ln -sf /usr/share/zoneinfo/Etc/UTC /etc/localtime",
        "systemctl enable systemd-networkd.service vigil-lab-enroll.service "
        "vigil-sensor-guest.service ssh.service cron.service rsyslog.service >/dev/null 2>&1",
        "systemctl mask systemd-networkd-wait-online.service apt-daily.timer "
        "apt-daily-upgrade.timer man-db.timer e2scrub_reap.service >/dev/null 2>&1",
        "rm -f /etc/ssh/ssh_host_*",  # new host keys at each VM's first boot
    ])
    subprocess.run(["chroot", str(root), "/bin/sh", "-c", script], check=True)
    _write(root / "etc/systemd/system/ssh-hostkeys.service",
           "[Unit]\nDescription=SSH host keys for this VM\nBefore=ssh.service\n"
           "ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key\n\n"
           "[Service]\nType=oneshot\n"
           "ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key\n"
           "ExecStart=/usr/bin/ssh-keygen -q -t ecdsa -N '' -f /etc/ssh/ssh_host_ecdsa_key\n\n"
           "[Install]\nWantedBy=multi-user.target\n")
    (root / "etc/systemd/system/multi-user.target.wants/ssh-hostkeys.service").symlink_to(
        "/etc/systemd/system/ssh-hostkeys.service")
    history = "ls -la\ncd /srv/app\ngit pull\nsystemctl status app\ntail -f /var/log/app.log\n"
    _write(root / f"{home.lstrip('/')}/.bash_history", history * 8, 0o600)
    subprocess.run(["chroot", str(root), "chown", f"{LAB_USER}:{LAB_USER}",
                    f"{home}/.bash_history"], check=True)
