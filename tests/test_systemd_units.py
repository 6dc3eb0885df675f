"""
Tests for the systemd units in C{conf/systemd/}.

The unit files are parsed with L{configparser} (and, for keys that systemd
allows to repeat, such as C{ExecStart=} and C{SystemCallFilter=}, read line by
line) and checked for the settings the deployment relies on.  When
C{systemd-analyze} is installed, C{systemd-analyze verify} checks them too.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

REPO_ROOT = Path(__file__).resolve().parent.parent
UNIT_DIR = REPO_ROOT / "conf" / "systemd"
SERVICE = UNIT_DIR / "grafana-aggregator.service"
SOCKET = UNIT_DIR / "grafana-aggregator.socket"
DROP_IN_DIR = UNIT_DIR / "grafana-aggregator.service.d"
DROP_IN = DROP_IN_DIR / "socket-activation.conf"

TWISTD = "/opt/grafana-aggregator/venv/bin/twistd"
CONFIG = "/etc/grafana-aggregator/aggregator.ini"
MAIN_ARGV = [
    TWISTD,
    "--nodaemon",
    "--pidfile=",
    "grafana-aggregator",
    "--config",
    CONFIG,
    "--workers",
    "auto",
]
LISTEN_ARGS = ["--listen", "systemd:domain=INET6:index=0"]

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "UMask": "0077",
    "ReadWritePaths": "/var/lib/grafana-aggregator",
}


def parseUnit(path: Path) -> configparser.ConfigParser:
    """
    Parse a unit file; later assignments of a repeated key win.
    """
    parser = configparser.ConfigParser(
        strict=False,
        interpolation=None,
        delimiters=("=",),
        comment_prefixes=("#", ";"),
        empty_lines_in_values=False,
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path, encoding="utf-8")
    return parser


def rawEntries(path: Path) -> list[tuple[str, str, str]]:
    """
    Read a unit file line by line as C{(section, key, value)} triples in file
    order, keeping every assignment of a repeated key.
    """
    entries: list[tuple[str, str, str]] = []
    section = ""
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped[0] in "#;"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        stripped = pending + stripped
        pending = ""
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1]
            continue
        key, sep, value = stripped.partition("=")
        if not sep:
            raise ValueError(f"{path}: not an assignment: {line!r}")
        entries.append((section, key.strip(), value.strip()))
    return entries


def allValues(path: Path, section: str, key: str) -> list[str]:
    """
    Every value assigned to C{key} in C{section}, in file order.
    """
    return [v for s, k, v in rawEntries(path) if s == section and k == key]


def comments(path: Path) -> str:
    """
    The comment lines of a unit file, joined.
    """
    return "\n".join(
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.lstrip().startswith("#")
    )


class ServiceUnitTests(SynchronousTestCase):
    """
    Tests for C{grafana-aggregator.service}.
    """

    def setUp(self) -> None:
        self.unit = parseUnit(SERVICE)
        self.service = self.unit["Service"]

    def test_sections(self) -> None:
        """
        The unit has exactly the Unit, Service and Install sections.
        """
        self.assertEqual(self.unit.sections(), ["Unit", "Service", "Install"])

    def test_exec_start(self) -> None:
        """
        The service runs twistd from the venv in the foreground, without a pid
        file, with the plugin's configuration file.
        """
        execStarts = allValues(SERVICE, "Service", "ExecStart")
        self.assertEqual(len(execStarts), 1, execStarts)
        argv = shlex.split(execStarts[0])
        self.assertEqual(argv, MAIN_ARGV)
        self.assertIn("--nodaemon", argv)
        # An empty --pidfile= (not a missing one) disables twistd's pid file.
        self.assertIn("--pidfile=", argv)
        self.assertLess(argv.index("--pidfile="), argv.index("grafana-aggregator"))

    def test_account_and_directories(self) -> None:
        """
        The service runs as grafana-aggregator in its private state folder,
        with its configuration folder managed by systemd.
        """
        self.assertEqual(self.service["Type"], "simple")
        self.assertEqual(self.service["User"], "grafana-aggregator")
        self.assertEqual(self.service["Group"], "grafana-aggregator")
        self.assertEqual(self.service["WorkingDirectory"], "/var/lib/grafana-aggregator")
        self.assertEqual(self.service["StateDirectory"], "grafana-aggregator")
        self.assertEqual(self.service["StateDirectoryMode"], "0700")
        self.assertEqual(self.service["ConfigurationDirectory"], "grafana-aggregator")
        self.assertEqual(
            allValues(SERVICE, "Service", "Environment"), ["PYTHONUNBUFFERED=1"]
        )

    def test_lifecycle(self) -> None:
        """
        The service restarts on failure after 5 seconds, is stopped with
        SIGTERM within 90 seconds and may open 65536 files.
        """
        self.assertEqual(self.service["Restart"], "on-failure")
        self.assertEqual(self.service["RestartSec"], "5")
        self.assertEqual(self.service["KillSignal"], "SIGTERM")
        self.assertEqual(self.service["TimeoutStopSec"], "90")
        # SIGTERM to the owner only, which drains its workers in order; SIGKILL for all at the timeout.
        self.assertEqual(self.service["KillMode"], "mixed")
        self.assertEqual(self.service["LimitNOFILE"], "65536")

    def test_ordering_and_install(self) -> None:
        """
        The service starts after the network is online and is wanted by
        multi-user.target.
        """
        self.assertEqual(self.unit["Unit"]["After"], "network-online.target")
        self.assertEqual(self.unit["Unit"]["Wants"], "network-online.target")
        self.assertEqual(self.unit["Install"]["WantedBy"], "multi-user.target")

    def test_hardening(self) -> None:
        """
        Every hardening setting is present once with the expected value.
        """
        for key, expected in HARDENING.items():
            values = allValues(SERVICE, "Service", key)
            self.assertEqual(values, [expected], f"{key}=")

    def test_system_call_filter(self) -> None:
        """
        System calls are limited to @system-service, minus @privileged and
        @resources.
        """
        self.assertEqual(
            allValues(SERVICE, "Service", "SystemCallFilter"),
            ["@system-service", "~@privileged @resources"],
        )

    def test_memory_deny_write_execute_off_on_purpose(self) -> None:
        """
        MemoryDenyWriteExecute is explicitly off, with the reason given next
        to it (pyOpenSSL's cffi callbacks need W+X memory).
        """
        self.assertEqual(allValues(SERVICE, "Service", "MemoryDenyWriteExecute"), ["no"])
        self.assertIn("ffi.callback()", comments(SERVICE))

    def test_installation_documented(self) -> None:
        """
        The comments say how to build the venv and install the unit.
        """
        text = comments(SERVICE)
        self.assertIn("python3 -m venv /opt/grafana-aggregator/venv", text)
        self.assertIn("/opt/grafana-aggregator/venv/bin/pip install <wheel>", text)
        self.assertIn("/etc/systemd/system/", text)
        self.assertIn("systemctl daemon-reload", text)


class MemoryDenyWriteExecuteTests(SynchronousTestCase):
    """
    Why C{MemoryDenyWriteExecute=} is off in the service unit.
    """

    PROBE = r"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    print("PR_SET_MDWE unsupported, errno", ctypes.get_errno())
    sys.exit(3)
try:
    from OpenSSL import SSL
except ImportError as e:
    print("pyOpenSSL missing:", e)
    sys.exit(5)
ctx = SSL.Context(SSL.TLS_METHOD)
try:
    ctx.set_verify(SSL.VERIFY_PEER, lambda *args: True)
except MemoryError as e:
    print(e)
    sys.exit(0)
print("callback allocated")
sys.exit(1)
"""

    def test_py_open_sslcallbacks_need_writable_executable_memory(self) -> None:
        """
        Under the kernel's W^X policy (what MemoryDenyWriteExecute=yes
        enforces) pyOpenSSL cannot create the verify callback Twisted installs
        on every TLS client connection.
        """
        if not sys.platform.startswith("linux"):
            raise SkipTest("PR_SET_MDWE is Linux-only")
        result = subprocess.run(
            [sys.executable, "-c", self.PROBE],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        output = result.stdout + result.stderr
        if result.returncode in (3, 5):
            raise SkipTest(output.strip())
        self.assertNotEqual(
            result.returncode,
            1,
            "pyOpenSSL callbacks now work without W+X memory: "
            "MemoryDenyWriteExecute=yes can be enabled in "
            "conf/systemd/grafana-aggregator.service",
        )
        self.assertEqual(result.returncode, 0, output)
        self.assertIn("write+execute", output)


class SocketUnitTests(SynchronousTestCase):
    """
    Tests for C{grafana-aggregator.socket} and the socket-activation drop-in.
    """

    def test_socket(self) -> None:
        """
        The socket listens on TCP 6443 without Nagle, names its descriptor and
        is wanted by sockets.target.
        """
        unit = parseUnit(SOCKET)
        self.assertEqual(unit.sections(), ["Unit", "Socket", "Install"])
        self.assertEqual(allValues(SOCKET, "Socket", "ListenStream"), ["6443"])
        self.assertEqual(unit["Socket"]["FileDescriptorName"], "grafana-aggregator")
        self.assertEqual(unit["Socket"]["NoDelay"], "true")
        # The service it activates is the one of the same name.
        self.assertNotIn("Service", unit["Socket"])
        self.assertNotIn("Accept", unit["Socket"])
        self.assertEqual(unit["Install"]["WantedBy"], "sockets.target")

    def test_drop_in_depends_on_socket(self) -> None:
        """
        The drop-in makes the service require, and start after, the socket.
        """
        unit = parseUnit(DROP_IN)
        self.assertEqual(unit["Unit"]["Requires"], "grafana-aggregator.socket")
        self.assertEqual(unit["Unit"]["After"], "grafana-aggregator.socket")

    def test_drop_in_replaces_exec_start(self) -> None:
        """
        The drop-in first resets ExecStart, then runs the same command with
        --listen naming the systemd-passed socket.
        """
        execStarts = allValues(DROP_IN, "Service", "ExecStart")
        self.assertEqual(len(execStarts), 2, execStarts)
        self.assertEqual(execStarts[0], "")
        argv = shlex.split(execStarts[1])
        self.assertEqual(argv, MAIN_ARGV + LISTEN_ARGS)
        mainArgv = shlex.split(allValues(SERVICE, "Service", "ExecStart")[0])
        self.assertEqual(argv[: len(mainArgv)], mainArgv)
        self.assertTrue(argv[argv.index("--listen") + 1].startswith("systemd:"))

    def test_installation_documented(self) -> None:
        """
        The socket and drop-in comments say how to install and enable them.
        """
        for path in (SOCKET, DROP_IN):
            text = comments(path)
            self.assertIn("/etc/systemd/system/", text, path)
            self.assertIn("systemctl daemon-reload", text, path)
            self.assertIn("systemctl enable --now grafana-aggregator.socket", text, path)


# systemd-analyze verify

# Messages that mean systemd-analyze could not run here, as opposed to a
# problem in a unit file.
ENVIRONMENT_FAILURES = re.compile(
    r"bus|Failed to (initialize|allocate|create|set up|start|open) manager"
    r"|Permission denied|Operation not permitted|Read-only file system"
    r"|cgroup|user credentials|resolve user|No such process",
    re.IGNORECASE,
)

# Messages that are about unit file contents.
UNIT_PROBLEMS = re.compile(
    r"Unknown (key|section|lvalue)|Failed to parse|Invalid|bad unit file"
    r"|not executable|Missing|Refusing|Unit file .* not found",
    re.IGNORECASE,
)


def _systemdAnalyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        raise SkipTest("systemd-analyze is not installed")
    return path


def verify(folder: Path, *units: str) -> tuple[int, str]:
    """
    Run C{systemd-analyze verify} on C{units} (file names in C{folder}) and
    return its exit status and its combined output.

    Warnings are kept (C{SYSTEMD_LOG_LEVEL=warning}): at C{err} systemd
    hides "Unknown key"/"Failed to parse" messages, and verify still exits 0
    for them.  Raises L{SkipTest} when the failure is about this machine
    rather than the units.
    """
    command = [_systemdAnalyze(), "verify", "--man=no"]
    helpText = subprocess.run(
        [command[0], "--help"], capture_output=True, text=True, check=False
    ).stdout
    if "--recursive-errors" in helpText:
        # Only our own units; the host's dependencies are not under test.
        command.append("--recursive-errors=no")
    command += [str(folder / unit) for unit in units]
    env = dict(
        os.environ,
        SYSTEMD_LOG_LEVEL="warning",
        SYSTEMD_LOG_COLOR="0",
        SYSTEMD_PAGER="",
        LC_ALL="C",
    )
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    if (
        result.returncode != 0
        and ENVIRONMENT_FAILURES.search(output)
        and not UNIT_PROBLEMS.search(output)
    ):
        raise SkipTest(
            f"systemd-analyze verify cannot run here (exit {result.returncode}):"
            f" {output.strip()}"
        )
    return result.returncode, output


def unitMessages(output: str, folder: Path, names: tuple[str, ...]) -> list[str]:
    """
    The lines of verify output that are about the given units.
    """
    return [
        line
        for line in output.splitlines()
        if str(folder) in line or any(name in line for name in names)
    ]


class SystemdAnalyzeVerifyTests(SynchronousTestCase):
    """
    C{systemd-analyze verify} accepts the units and rejects broken ones.
    """

    UNITS = ("grafana-aggregator.service", "grafana-aggregator.socket")
    NAMES = UNITS + ("socket-activation.conf",)

    def setUp(self) -> None:
        _systemdAnalyze()
        self.folder = Path(self.mktemp()).absolute()
        self.folder.mkdir(parents=True)

    def stage(self) -> Path:
        """
        Copy the units and drop-in into the temporary folder, with the twistd
        path replaced by an executable that exists here (verify checks that
        ExecStart's binary exists).
        """
        executable = shutil.which("true") or "/bin/true"
        shutil.copy(SERVICE, self.folder / SERVICE.name)
        shutil.copy(SOCKET, self.folder / SOCKET.name)
        shutil.copytree(DROP_IN_DIR, self.folder / DROP_IN_DIR.name)
        for path in (self.folder / SERVICE.name, self.folder / DROP_IN_DIR.name / DROP_IN.name):
            text = path.read_text(encoding="utf-8")
            self.assertIn(TWISTD, text)
            path.write_text(text.replace(TWISTD, executable), encoding="utf-8")
        return self.folder

    def test_units_verify(self) -> None:
        """
        The service (with its drop-in) and the socket verify cleanly: exit
        status 0 and not one warning about them.
        """
        folder = self.stage()
        status, output = verify(folder, *self.UNITS)
        self.assertEqual(status, 0, output)
        self.assertEqual(unitMessages(output, folder, self.NAMES), [], output)

    def test_drop_in_is_verified(self) -> None:
        """
        verify reads the drop-in next to the staged service: a bad key in it
        is reported.
        """
        folder = self.stage()
        dropIn = folder / DROP_IN_DIR.name / DROP_IN.name
        with dropIn.open("a", encoding="utf-8") as f:
            f.write("RestartSecs=5\n")
        status, output = verify(folder, *self.UNITS)
        messages = unitMessages(output, folder, self.NAMES)
        self.assertTrue(
            any("socket-activation.conf" in m and "RestartSecs" in m for m in messages),
            output,
        )

    def test_unstaged_executable_is_rejected(self) -> None:
        """
        Unstaged, verify complains that the venv's twistd does not exist,
        which is why the tests rewrite the path.
        """
        if os.access(TWISTD, os.X_OK):
            raise SkipTest(f"{TWISTD} exists on this machine")
        shutil.copy(SERVICE, self.folder / SERVICE.name)
        status, output = verify(self.folder, SERVICE.name)
        self.assertNotEqual(status, 0, output)
        self.assertIn(TWISTD, output)

    def test_misspelled_section_is_rejected(self) -> None:
        """
        A misspelled [Service] section makes verify fail.
        """
        (self.folder / "broken.service").write_text(
            "[Unit]\nDescription=broken\n\n[Servise]\nExecStart=/bin/true\n",
            encoding="utf-8",
        )
        status, output = verify(self.folder, "broken.service")
        self.assertNotEqual(status, 0, output)
        self.assertIn("Unknown section 'Servise'", output)

    def test_misspelled_key_and_bad_value_are_reported(self) -> None:
        """
        A misspelled key and an invalid value are reported against the unit,
        so the clean-output check of test_unitsVerify would catch them.
        """
        (self.folder / "typo.service").write_text(
            "[Unit]\nDescription=typo\n\n[Service]\nExecStart=/bin/true\n"
            "Restrt=on-failure\nRestart=sometimes\n",
            encoding="utf-8",
        )
        status, output = verify(self.folder, "typo.service")
        messages = unitMessages(output, self.folder, ("typo.service",))
        self.assertTrue(any("Unknown key 'Restrt'" in m for m in messages), output)
        self.assertTrue(
            any("Failed to parse" in m and "sometimes" in m for m in messages), output
        )
