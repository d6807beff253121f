"""The `blfs` command line as a user meets it (docs/ARCHITECTURE.md, Job API; README.md), run as a real subprocess.

Bad input must get one clear line on stderr, starting with "blfs: ", naming the problem,
with a non-zero exit and never an internal traceback: a missing job file, a file with no
Job class or two, a syntax error, a job file that raises at import, unreadable input, an
output directory that already holds _SUCCESS (left untouched), an unreachable master, a
bad --split-size, --reducers 0. A job whose user code fails exits non-zero and prints the
failing task, attempt, worker and the *user's* traceback, leaving no _SUCCESS, no part
files and no _temporary. A tiny job succeeds with plain progress lines when stderr is not
a terminal, and arguments after `--` reach self.args.

Every run gets its own TMPDIR, so the `--local` cluster's temporary root
(TMPDIR/blfs-local-*) is known: after each run no process whose command line holds that
root (the local workers and the task processes they fork) may be left, and the root
itself must be gone.
"""
from __future__ import annotations

import collections
import json
import os
import pty
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
JOBS = REPO / "tests" / "jobs"
TIMEOUT = 120
LEFTOVER_GRACE = 2.0  # seconds a local worker may take to go after `blfs submit` exits

WORDCOUNT = REPO / "examples" / "wordcount.py"
TWO_JOBS = JOBS / "cli_two_jobs.py"
NO_JOB = JOBS / "cli_no_job.py"
ARGS_JOB = JOBS / "cli_args.py"
FAIL_MAP = JOBS / "cli_fail_map.py"
FAIL_REDUCE = JOBS / "cli_fail_reduce.py"

PROGRESS_LINE = re.compile(r"^(\S+): map (\d+)/(\d+)  reduce (\d+)/(\d+)$")
SUCCEEDED_LINE = re.compile(r"^job (\S+) succeeded in [0-9.]+ s: (.+)$")


# ------------------------------------------------------------------------------ processes

def local_worker_pids(root_prefix: str) -> set:
    """Live processes running `blfsd worker --local-root ROOT` with ROOT under root_prefix.

    Task processes are forked from a worker, so they carry the same command line.
    """
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "worker" not in argv or "--local-root" not in argv:
            continue
        i = argv.index("--local-root")
        if i + 1 < len(argv) and argv[i + 1].startswith(root_prefix):
            pids.add(int(entry))
    return pids


def all_local_worker_pids() -> set:
    return local_worker_pids("")


@dataclass
class Result:
    cmd: list
    returncode: int
    stdout: str
    stderr: str
    leftover: set = field(default_factory=set)  # local worker pids still alive after exit

    def describe(self) -> str:
        return (f"$ {' '.join(map(str, self.cmd))}\nexit {self.returncode}\n"
                f"--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-6000:]}")

    @property
    def lines(self) -> list:
        return [line for line in self.stderr.splitlines() if line.strip()]


class Sandbox:
    """A short private directory (Unix socket paths stay short) with the run's TMPDIR."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="clit-", dir="/tmp"))
        self.dir.chmod(0o755)  # so that `nobody` may reach files put here
        self.tmp = self.dir / "tmp"
        self.tmp.mkdir()
        self.tmp.chmod(0o1777)
        self.before = all_local_worker_pids()
        self.seen_leftovers: set = set()

    def path(self, name: str) -> Path:
        return self.dir / name

    def write(self, name: str, text: str, mode: int = 0o644) -> Path:
        p = self.dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
        p.chmod(mode)
        return p

    def env(self) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env["TMPDIR"] = str(self.tmp)
        # no /etc/blfs/blfs.toml of this machine may change what the command does
        env["BLFS_CONFIG"] = str(self.dir / "no-such-config.toml")
        env.pop("NOTIFY_SOCKET", None)
        return env

    def run(self, *args, prefix=(), timeout=TIMEOUT, stderr_fd=None) -> Result:
        cmd = [*prefix, sys.executable, "-m", "blfsd", *map(str, args)]
        proc = subprocess.Popen(cmd, cwd=REPO, env=self.env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE,
                                stderr=stderr_fd if stderr_fd is not None else subprocess.PIPE,
                                text=True, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            pytest.fail(f"no exit after {timeout} s (killed)\n$ {' '.join(cmd)}\n"
                        f"--- stderr\n{(stderr or '')[-4000:]}")
        res = Result(cmd, proc.returncode, stdout or "", stderr or "")
        deadline = time.monotonic() + LEFTOVER_GRACE
        while True:
            res.leftover = local_worker_pids(str(self.tmp)) - self.before
            if not res.leftover or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.seen_leftovers |= res.leftover
        return res

    def assert_clean(self, res: Result) -> None:
        """No local worker or task process of this run alive; its local root removed."""
        assert not res.leftover, (
            f"processes of the local cluster still running {LEFTOVER_GRACE} s after "
            f"`blfs submit` exited: {describe_pids(res.leftover)}\n{res.describe()}")
        roots = sorted(p.name for p in self.tmp.iterdir())
        assert roots == [], f"temporary local root(s) left in TMPDIR: {roots}\n{res.describe()}"

    def close(self) -> None:
        for pid in self.seen_leftovers | (local_worker_pids(str(self.tmp)) - self.before):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.dir.rglob("*"):  # mode-000 files and dirs made by the tests
            try:
                p.chmod(0o700)
            except OSError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


def describe_pids(pids: set) -> str:
    out = []
    for pid in sorted(pids):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().replace(b"\0", b" ").decode(errors="replace")
            out.append(f"{pid}: {argv}")
        except OSError:
            out.append(f"{pid}: (gone)")
    return "; ".join(out)


@pytest.fixture
def sb():
    box = Sandbox()
    try:
        yield box
    finally:
        box.close()


# ------------------------------------------------------------------------------ checks

def assert_one_line_error(res: Result, *needles: str) -> str:
    """Non-zero exit, exactly one non-empty stderr line "blfs: ...", no traceback."""
    assert res.returncode != 0, f"expected a failure\n{res.describe()}"
    assert "Traceback" not in res.stderr, f"an internal traceback reached the user\n" \
                                          f"{res.describe()}"
    assert len(res.lines) == 1, f"expected exactly one line on stderr\n{res.describe()}"
    line = res.lines[0]
    assert line.startswith("blfs: "), f"the line does not start with 'blfs: '\n{res.describe()}"
    for needle in needles:
        assert needle in line, f"{needle!r} is not named in the message\n{res.describe()}"
    assert res.stdout == "", f"nothing belongs on stdout\n{res.describe()}"
    return line


def words_input(sb: Sandbox, name: str = "in.txt", lines: int = 200, seed: int = 1) -> Path:
    import random
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(60)] + ["café", "Zebra", "don't", "42"]
    text = "".join(" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 9))) + "\n"
                   for _ in range(lines))
    return sb.write(name, text)


def read_output(out: Path) -> dict:
    """{part name: [(key, value), ...]} of a finished output directory."""
    parts = {}
    for p in sorted(out.glob("part-*")):
        rows = []
        for line in p.read_text(encoding="utf-8").splitlines():
            key, sep, value = line.partition("\t")
            assert sep, f"{p.name}: no TAB in {line!r}"
            rows.append((key, value))
        parts[p.name] = rows
    return parts


def assert_no_partial_output(out: Path, res: Result) -> None:
    if not out.exists():
        return
    names = sorted(os.listdir(out))
    assert "_SUCCESS" not in names, f"a failed job wrote _SUCCESS\n{res.describe()}"
    assert not [n for n in names if n.startswith("part-")], \
        f"a failed job left part files: {names}\n{res.describe()}"
    assert "_temporary" not in names, \
        f"a failed job left {out}/_temporary: {list((out / '_temporary').rglob('*'))}\n" \
        f"{res.describe()}"


def snapshot(root: Path) -> dict:
    """Everything about a directory tree that a careless writer could change."""
    snap = {}
    for p in [root, *sorted(root.rglob("*"))]:
        st = p.lstat()
        snap[str(p.relative_to(root))] = (
            st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
            p.read_bytes() if p.is_file() else sorted(os.listdir(p)))
    return snap


# ------------------------------------------------------------------------------ job files

def test_missing_job_file(sb):
    inp = words_input(sb)
    missing = sb.path("no_such_job.py")
    res = sb.run("submit", missing, "--input", inp, "--output", sb.path("out"), "--local")
    assert_one_line_error(res, str(missing))
    assert not sb.path("out").exists()
    sb.assert_clean(res)


@pytest.mark.parametrize("case", ["directory", "not-utf8"])
def test_unusable_job_file(sb, case):
    inp = words_input(sb)
    if case == "directory":
        job = sb.path("job_dir.py")
        job.mkdir()
    else:
        job = sb.path("latin1.py")
        job.write_bytes(b"# caf\xe9\nfrom blfsd import Job\nclass J(Job):\n    pass\n")
    res = sb.run("submit", job, "--input", inp, "--output", sb.path("out"), "--local")
    assert_one_line_error(res, job.name)
    sb.assert_clean(res)


def test_job_file_without_job_class(sb):
    inp = words_input(sb)
    res = sb.run("submit", NO_JOB, "--input", inp, "--output", sb.path("out"), "--local")
    line = assert_one_line_error(res, NO_JOB.name)
    assert "Job" in line
    sb.assert_clean(res)


def test_job_file_with_two_job_classes_needs_job_option(sb):
    inp = words_input(sb)
    res = sb.run("submit", TWO_JOBS, "--input", inp, "--output", sb.path("out"), "--local")
    line = assert_one_line_error(res, TWO_JOBS.name, "Shout", "Whisper", "--job")
    assert not sb.path("out").exists(), line
    sb.assert_clean(res)


def test_job_option_naming_no_class(sb):
    inp = words_input(sb)
    res = sb.run("submit", TWO_JOBS, "--job", "Murmur", "--input", inp,
                 "--output", sb.path("out"), "--local")
    assert_one_line_error(res, TWO_JOBS.name, "Murmur")
    sb.assert_clean(res)


@pytest.mark.slow
def test_job_option_picks_one_class_and_runs_it(sb):
    inp = sb.write("in.txt", "Alpha beta\nBETA gamma alpha\n")
    out = sb.path("out")
    res = sb.run("submit", TWO_JOBS, "--job", "Whisper", "--input", inp, "--output", out,
                 "--local", "--workers", "2", "--reducers", "1")
    assert res.returncode == 0, res.describe()
    assert (out / "_SUCCESS").exists(), res.describe()
    rows = [r for part in read_output(out).values() for r in part]
    assert rows == [("whisper:alpha", "2"), ("whisper:beta", "2"), ("whisper:gamma", "1")], \
        res.describe()
    sb.assert_clean(res)


def test_job_file_with_syntax_error(sb):
    inp = words_input(sb)
    job = sb.write("cli_broken.py", "from blfsd import Job\n\nclass J(Job)\n    pass\n")
    res = sb.run("submit", job, "--input", inp, "--output", sb.path("out"), "--local")
    line = assert_one_line_error(res, job.name)
    assert "syntax" in line.lower(), line
    assert ":3" in line, f"the line of the syntax error is not given: {line}"
    sb.assert_clean(res)


def test_job_file_raising_at_import(sb):
    inp = words_input(sb)
    marker = f"import-failure-{uuid.uuid4().hex[:8]}"
    job = sb.write("cli_raises.py", "from blfsd import Job\n\n"
                   f"raise RuntimeError({marker!r})\n\n"
                   "class J(Job):\n    pass\n")
    res = sb.run("submit", job, "--input", inp, "--output", sb.path("out"), "--local")
    assert_one_line_error(res, job.name, "RuntimeError", marker)
    sb.assert_clean(res)


def test_job_file_calling_sys_exit_at_import(sb):
    inp = words_input(sb)
    job = sb.write("cli_exits.py", "import sys\nsys.exit()\n")
    res = sb.run("submit", job, "--input", inp, "--output", sb.path("out"), "--local",
                 "--workers", "1")
    try:
        assert_one_line_error(res, job.name)
    finally:
        sb.assert_clean(res)


@pytest.mark.parametrize("source, needle", [
    ("from blfsd import Job\nclass J(Job):\n    reducers = 0\n", "reducers"),
    ("from blfsd import Job\nclass J(Job):\n    input_format = 'csv'\n", "input_format"),
])
def test_job_class_with_bad_settings(sb, source, needle):
    inp = words_input(sb)
    job = sb.write("cli_bad_settings.py", source)
    res = sb.run("submit", job, "--input", inp, "--output", sb.path("out"), "--local")
    assert_one_line_error(res, job.name, needle)
    sb.assert_clean(res)


# ------------------------------------------------------------------------------ input

@pytest.mark.parametrize("case", ["missing-file", "under-missing-dir", "empty-dir",
                                  "dir-of-hidden-files", "second-of-two-missing"])
def test_unreadable_input(sb, case):
    good = words_input(sb)
    if case == "missing-file":
        bad = sb.path("no_such_input.txt")
        inputs = [bad]
    elif case == "under-missing-dir":
        bad = sb.path("no_such_dir") / "part.txt"
        inputs = [bad]
    elif case == "empty-dir":
        bad = sb.path("empty_dir")
        bad.mkdir()
        inputs = [bad]
    elif case == "dir-of-hidden-files":
        bad = sb.path("hidden_only")
        bad.mkdir()
        (bad / ".hidden").write_text("a b\n")
        (bad / "_SUCCESS").write_text("")
        inputs = [bad]
    else:
        bad = sb.path("gone.txt")
        inputs = [good, bad]
    args = []
    for p in inputs:
        args += ["--input", p]
    res = sb.run("submit", WORDCOUNT, *args, "--output", sb.path("out"), "--local")
    assert_one_line_error(res, str(bad))
    assert not sb.path("out").exists()
    sb.assert_clean(res)


@pytest.mark.parametrize("case", ["file-mode-000", "dir-with-file-mode-000"])
def test_input_without_read_permission(sb, case):
    if case == "file-mode-000":
        bad = sb.write("secret.txt", "a b c\n", mode=0o000)
        given = bad
    else:
        d = sb.path("secret_dir")
        d.mkdir()
        d.chmod(0o755)
        sb.write("secret_dir/a.txt", "a b\n")
        bad = sb.write("secret_dir/b.txt", "c d\n", mode=0o000)
        given = d
    job = sb.write("cli_job.py", WORDCOUNT.read_text())
    prefix = ()
    if os.geteuid() == 0:  # root reads mode-000 files: be somebody who cannot
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv is missing: cannot drop privileges")
        try:
            import pwd
            pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("running as root and there is no user nobody")
        prefix = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")
    res = sb.run("submit", job, "--input", given, "--output", sb.path("out"), "--local",
                 prefix=prefix)
    line = assert_one_line_error(res, str(bad))
    assert "ermission" in line, line
    sb.assert_clean(res)


def test_an_empty_input_file_is_a_valid_input(sb):
    """Zero records: the job runs and its parts are empty (a missing or unreadable file
    stays an error, above)."""
    empty = sb.write("empty.txt", "")
    out = sb.path("out")
    res = sb.run("submit", WORDCOUNT, "--input", empty, "--output", out, "--local",
                 "--reducers", "2")
    assert res.returncode == 0, res.describe()
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000", "part-00001"]
    assert all((out / p).read_bytes() == b"" for p in ("part-00000", "part-00001"))
    sb.assert_clean(res)


# ------------------------------------------------------------------------------ output

@pytest.mark.parametrize("mode", ["local", "remote"])
def test_output_already_holding_success_is_left_untouched(sb, mode):
    inp = words_input(sb)
    out = sb.path("finished")
    out.mkdir()
    (out / "part-00000").write_text("old\t1\n")
    (out / "part-00001").write_text("older\t2\n")
    (out / "_SUCCESS").write_text("")
    (out / "notes").mkdir()
    (out / "notes" / "keep.txt").write_text("mine\n")
    past = time.time_ns() - 86_400 * 10**9
    for p in [*out.rglob("*"), out]:
        os.utime(p, ns=(past, past))
    before = snapshot(out)
    where = ["--local", "--workers", "1"] if mode == "local" else ["--master", "/nonexistent/sock"]
    res = sb.run("submit", WORDCOUNT, "--input", inp, "--output", out, *where)
    # the _SUCCESS check comes before any cluster is started or reached
    assert_one_line_error(res, str(out), "_SUCCESS")
    assert snapshot(out) == before, "the finished output directory was changed"
    sb.assert_clean(res)


def test_output_is_a_file(sb):
    inp = words_input(sb)
    target = sb.write("a_file", "precious\n")
    before = snapshot(target.parent)[target.name]
    res = sb.run("submit", WORDCOUNT, "--input", inp, "--output", target, "--local")
    assert_one_line_error(res, str(target))
    assert snapshot(target.parent)[target.name] == before
    sb.assert_clean(res)


def test_output_under_a_file_is_refused_before_any_work(sb):
    """Not after the whole map phase, and not blamed on the user's code."""
    inp = words_input(sb)
    target = sb.write("a_file", "precious\n")
    res = sb.run("submit", WORDCOUNT, "--input", inp, "--output", target / "out", "--local")
    assert_one_line_error(res, "not a directory")
    assert target.read_text() == "precious\n"
    sb.assert_clean(res)


# ------------------------------------------------------------------------------ master

def _key(sb: Sandbox) -> Path:
    return sb.write("cluster.key", uuid.uuid4().hex + uuid.uuid4().hex + "\n", mode=0o600)


def test_unreachable_master_socket_path(sb):
    inp = words_input(sb)
    res = sb.run("submit", WORDCOUNT, "--input", inp, "--output", sb.path("out"),
                 "--master", "/nonexistent/sock")
    assert_one_line_error(res, "/nonexistent/sock")
    assert not sb.path("out").exists()
    sb.assert_clean(res)


def test_unreachable_master_tcp(sb):
    inp = words_input(sb)
    res = sb.run("submit", WORDCOUNT, "--input", inp, "--output", sb.path("out"),
                 "--master", "127.0.0.1:1", "--key", _key(sb))
    assert_one_line_error(res, "127.0.0.1:1")
    assert not sb.path("out").exists()
    sb.assert_clean(res)


def test_master_socket_with_nobody_listening(sb):
    """A stale socket file (bound once, nobody accepts): refused, not a traceback."""
    inp = words_input(sb)
    path = sb.path("stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(str(path))
    finally:
        s.close()
    res = sb.run("submit", WORDCOUNT, "--input", inp, "--output", sb.path("out"),
                 "--master", path)
    assert_one_line_error(res, str(path))
    sb.assert_clean(res)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_master_that_never_answers(sb, family):
    """Something listens but never speaks: the client gives up with one line."""
    inp = words_input(sb)
    if family == "tcp":
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{srv.getsockname()[1]}"
        extra = ["--key", _key(sb)]
    else:
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address = str(sb.path("mute.sock"))
        srv.bind(address)
        extra = []
    srv.listen(8)  # the kernel completes connections; nobody ever accepts or answers
    try:
        started = time.monotonic()
        res = sb.run("submit", WORDCOUNT, "--input", inp, "--output", sb.path("out"),
                     "--master", address, *extra, timeout=60)
        took = time.monotonic() - started
    finally:
        srv.close()
    assert_one_line_error(res, address)
    assert took < 30, f"took {took:.1f} s to give up"
    sb.assert_clean(res)


def test_tcp_master_with_missing_key_file(sb):
    inp = words_input(sb)
    key = sb.path("no_such.key")
    res = sb.run("submit", WORDCOUNT, "--input", inp, "--output", sb.path("out"),
                 "--master", "127.0.0.1:1", "--key", key)
    assert_one_line_error(res, str(key))
    sb.assert_clean(res)


@pytest.mark.parametrize("address", [
    "127.0.0.1:notaport",
    "127.0.0.1:99999",
])
def test_master_address_with_bad_port(sb, address):
    inp = words_input(sb)
    res = sb.run("submit", WORDCOUNT, "--input", inp, "--output", sb.path("out"),
                 "--master", address, "--key", _key(sb))
    assert_one_line_error(res, address)
    sb.assert_clean(res)


@pytest.mark.parametrize("command", [["status"], ["status", "J1"], ["jobs"], ["workers"],
                                     ["cancel", "J1"]])
def test_other_commands_with_unreachable_master(sb, command):
    res = sb.run(*command, "--master", "/nonexistent/sock")
    assert_one_line_error(res, "/nonexistent/sock")
    res = sb.run(*command, "--master", "127.0.0.1:1", "--key", _key(sb))
    assert_one_line_error(res, "127.0.0.1:1")
    sb.assert_clean(res)


# ------------------------------------------------------------------------------ options

@pytest.mark.parametrize("size", [
    "abc", "0", "-1", "1Q", "", "0.5", "nan",
    "inf",
    "1e400",
])
def test_bad_split_size(sb, size):
    inp = words_input(sb)
    res = sb.run("submit", WORDCOUNT, "--input", inp, "--output", sb.path("out"), "--local",
                 "--workers", "1", f"--split-size={size}")
    line = assert_one_line_error(res, "size")
    assert repr(size) in line or size in line, line
    assert not sb.path("out").exists()
    sb.assert_clean(res)


def test_reducers_zero(sb):
    inp = words_input(sb)
    res = sb.run("submit", WORDCOUNT, "--input", inp, "--output", sb.path("out"), "--local",
                 "--workers", "1", "--reducers", "0")
    try:
        assert_one_line_error(res, "--reducers")
        assert not sb.path("out").exists()
    finally:
        sb.assert_clean(res)


@pytest.mark.parametrize("option, value", [("--reducers", "-1"), ("--max-attempts", "0"),
                                           ("--max-attempts", "-2")])
def test_bad_counts(sb, option, value):
    inp = words_input(sb)
    res = sb.run("submit", WORDCOUNT, "--input", inp, "--output", sb.path("out"), "--local",
                 "--workers", "1", f"{option}={value}")
    assert_one_line_error(res, option)
    assert not sb.path("out").exists()
    sb.assert_clean(res)


@pytest.mark.parametrize("option, value", [("--reducers", "x"), ("--max-attempts", "two"),
                                           ("--task-timeout", "soon")])
def test_non_numeric_option(sb, option, value):
    """argparse's own message (usage + 'blfs submit: error: ...'), but never a traceback."""
    inp = words_input(sb)
    res = sb.run("submit", WORDCOUNT, "--input", inp, "--output", sb.path("out"), "--local",
                 f"{option}={value}")
    assert res.returncode == 2, res.describe()
    assert "Traceback" not in res.stderr, res.describe()
    assert res.lines and res.lines[-1].startswith("blfs"), res.describe()
    assert option in res.lines[-1] and value in res.lines[-1], res.describe()
    sb.assert_clean(res)


@pytest.mark.slow
@pytest.mark.parametrize("value", ["0", "-1"])
def test_bad_task_timeout(sb, value):
    inp = words_input(sb)
    out = sb.path("out")
    res = sb.run("submit", WORDCOUNT, "--input", inp, "--output", out, "--local",
                 "--workers", "1", f"--task-timeout={value}")
    assert_one_line_error(res, "timeout")
    assert_no_partial_output(out, res)
    sb.assert_clean(res)


# ------------------------------------------------------------------------------ real runs

@pytest.mark.slow
def test_successful_job_with_plain_progress(sb):
    inp = words_input(sb, lines=400)
    size = inp.stat().st_size
    split = 1024
    expected_maps = -(-size // split)
    assert expected_maps >= 3
    out = sb.path("out")
    res = sb.run("submit", WORDCOUNT, "--input", inp, "--output", out, "--local",
                 "--workers", "2", "--reducers", "2", "--split-size", str(split))
    assert res.returncode == 0, res.describe()
    assert res.stdout == "", res.describe()

    # output: _SUCCESS, one part per reducer, keys sorted in each part, counts right
    names = sorted(os.listdir(out))
    assert names == ["_SUCCESS", "part-00000", "part-00001"], res.describe()
    parts = read_output(out)
    got: dict = {}
    for name, rows in parts.items():
        keys = [k for k, _ in rows]
        assert keys == sorted(keys), f"{name}: keys not sorted"
        for k, v in rows:
            assert k not in got, f"key {k!r} in two parts"
            got[k] = int(v)
    want = collections.Counter(inp.read_text(encoding="utf-8").split())
    assert got == dict(want)

    # progress: plain lines (not a terminal), then the one "succeeded" line
    assert "Traceback" not in res.stderr and "\r" not in res.stderr \
        and "\x1b" not in res.stderr, res.describe()
    progress = [PROGRESS_LINE.match(line) for line in res.lines]
    progress = [m for m in progress if m]
    assert progress, f"no 'JOB: map N/M  reduce X/Y' lines\n{res.describe()}"
    done = SUCCEEDED_LINE.match(res.lines[-1])
    assert done, f"the last line does not say the job succeeded\n{res.describe()}"
    job_id = done.group(1)
    assert done.group(2) == str(out)
    assert {m.group(1) for m in progress} == {job_id}, res.describe()
    for m in progress:
        assert int(m.group(3)) == expected_maps and int(m.group(5)) == 2, res.describe()
        assert int(m.group(2)) <= expected_maps and int(m.group(4)) <= 2, res.describe()
    last = progress[-1]
    assert (last.group(2), last.group(4)) == (str(expected_maps), "2"), res.describe()
    counts = [(int(m.group(2)), int(m.group(4))) for m in progress]
    assert counts == sorted(counts), f"progress went backwards\n{res.describe()}"
    assert len(set(counts)) == len(counts), f"a progress line repeated\n{res.describe()}"
    sb.assert_clean(res)


@pytest.mark.slow
def test_progress_bar_on_a_terminal(sb):
    inp = words_input(sb)
    out = sb.path("out")
    master, slave = pty.openpty()
    chunks: list = []

    def drain():
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        res = sb.run("submit", WORDCOUNT, "--input", inp, "--output", out, "--local",
                     "--workers", "1", stderr_fd=slave)
    finally:
        os.close(slave)
        reader.join(5)
        os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    res.stderr = text
    assert res.returncode == 0, res.describe()
    assert (out / "_SUCCESS").exists()
    assert "\r[" in text and "%" in text, f"no progress bar on a terminal\n{text!r}"
    assert "succeeded" in text and "Traceback" not in text, text
    sb.assert_clean(res)


@pytest.mark.slow
def test_arguments_after_double_dash_reach_self_args(sb):
    inp = sb.write("in.txt", "one line\nanother\n")
    out = sb.path("out")
    job_args = ["plain", "--output", "two words", "-q", "--", "ünïcode", "", "--reducers=9"]
    res = sb.run("submit", ARGS_JOB, "--input", inp, "--output", out, "--local",
                 "--workers", "2", "--quiet", "--", *job_args)
    assert res.returncode == 0, res.describe()
    assert (out / "_SUCCESS").exists(), res.describe()
    rows = [r for part in read_output(out).values() for r in part]
    assert [k for k, _ in rows] == ["map", "reduce"], res.describe()
    for key, value in rows:
        assert json.loads(value) == job_args, f"{key} saw {value}"
    # --quiet: no progress lines, only the final word
    assert not any(PROGRESS_LINE.match(line) for line in res.lines), res.describe()
    assert len(res.lines) == 1 and SUCCEEDED_LINE.match(res.lines[0]), res.describe()
    sb.assert_clean(res)


@pytest.mark.slow
def test_failing_map_reports_the_users_traceback(sb):
    unique = uuid.uuid4().hex[:12]
    inp = words_input(sb)
    out = sb.path("out")
    res = sb.run("submit", FAIL_MAP, "--input", inp, "--output", out, "--local",
                 "--workers", "2", "--max-attempts", "2", "--", unique)
    assert res.returncode != 0, res.describe()
    err = res.stderr
    # the user's own traceback reaches the user
    assert f"boom-{unique}" in err, res.describe()
    assert "ValueError" in err and "Traceback" in err, res.describe()
    assert FAIL_MAP.name in err and "in map" in err, \
        f"the user's frame is not in the traceback\n{res.describe()}"
    # ... with the failing task, attempt and worker
    assert "m-00000" in err, res.describe()
    assert re.search(r"attempt\b.*\bw[01]\b", err), res.describe()
    assert any(line.startswith("blfs: ") and "failed" in line for line in res.lines), \
        res.describe()
    # --max-attempts 2: exactly attempts 0 and 1 of the task were tried
    assert set(re.findall(r"m-00000/(\d+)", err)) == {"0", "1"}, res.describe()
    assert_no_partial_output(out, res)
    sb.assert_clean(res)


@pytest.mark.slow
def test_failing_reduce_leaves_no_partial_output(sb):
    unique = uuid.uuid4().hex[:12]
    inp = words_input(sb, lines=600)
    out = sb.path("out")
    res = sb.run("submit", FAIL_REDUCE, "--input", inp, "--output", out, "--local",
                 "--workers", "2", "--max-attempts", "2", "--", unique)
    assert res.returncode != 0, res.describe()
    assert f"boom-{unique}" in res.stderr and "ValueError" in res.stderr, res.describe()
    assert "r-00001" in res.stderr, res.describe()
    assert FAIL_REDUCE.name in res.stderr and "in reduce" in res.stderr, res.describe()
    assert_no_partial_output(out, res)
    sb.assert_clean(res)


# ------------------------------------------------------------------------------ signals

@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=["ctrl-c", "sigterm", "sighup"])
def test_submit_local_cleans_up_on_a_signal(sb, sig):
    """A closed terminal (SIGHUP) or a kill (SIGTERM) in the middle of a job cleans up as
    Ctrl-C does: the local cluster's directory, its processes and OUTPUT/_temporary go,
    and the exit status says which signal it was."""
    data = words_input(sb, lines=2000)
    out = sb.path("out")
    cmd = [sys.executable, "-m", "blfsd", "submit", str(JOBS / "slow_wordcount.py"),
           "--input", str(data), "--output", str(out), "--local", "--workers", "2",
           "--", "30"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=sb.env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "_temporary").exists() and not list(sb.tmp.glob("*/logs")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        time.sleep(1.0)  # the maps are sleeping now
        assert list(sb.tmp.iterdir()), "the local cluster's directory should exist by now"
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    res = Result(cmd, proc.returncode, stdout, stderr)
    expected = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}[sig]
    assert res.returncode == expected, res.describe()
    assert "Traceback" not in res.stderr, res.describe()
    assert res.stderr.strip().splitlines()[-1].startswith("blfs: "), res.describe()
    deadline = time.monotonic() + LEFTOVER_GRACE
    while local_worker_pids(str(sb.tmp)) and time.monotonic() < deadline:
        time.sleep(0.05)
    res.leftover = local_worker_pids(str(sb.tmp))
    sb.assert_clean(res)
    assert_no_partial_output(out, res)


def test_submit_local_detach_is_refused(sb):
    res = sb.run("submit", WORDCOUNT, "--input", words_input(sb), "--output", sb.path("out"),
                 "--local", "--detach")
    assert_one_line_error(res, "--detach", "--local")
    assert res.returncode == 2
    assert not sb.path("out").exists()


_DAEMON_IMPORTS = """
import argparse, sys
import blfsd.cli as cli
cli._daemon_config = lambda args: argparse.Namespace(cluster_key="")
cli.auth.load_key = lambda path: None
cli.asyncio.run = lambda coro: coro.close()  # the daemon's serve(), not run
cli.run_daemon(argparse.Namespace(command=sys.argv[1], verbose=False))
print(" ".join(m for m in ("blfsd.master", "blfsd.scheduler", "blfsd.worker")
               if m in sys.modules))
"""


@pytest.mark.parametrize("command, loaded, not_loaded", [
    ("worker", "blfsd.worker", "blfsd.master"), ("master", "blfsd.master", "blfsd.worker")])
def test_a_daemon_imports_only_its_own_package(command, loaded, not_loaded):
    """`blfs worker` starts with every `blfs submit --local` (twice for --workers 2): it
    must not pay for importing the master and its scheduler (issue 13, tiny job)."""
    out = subprocess.run([sys.executable, "-c", _DAEMON_IMPORTS, command], check=True,
                         capture_output=True, text=True).stdout.split()
    assert loaded in out
    assert not_loaded not in out
