"""The one place that talks to adb, plus the host-side checks made before anything is pushed.

Every adb call goes through ``Adb.call``: ``[adb, "-s", serial, ...]`` with a timeout, and adb's own
failures (no device, several devices, unauthorized, offline, a phone that disconnects mid-run)
become an ``AdbError`` with one clear sentence.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kd_core.cli import BadInput, JobFailed

REMOTE_DIR = "/data/local/tmp/edgekd"

ELF_MACHINES = {3: "x86", 40: "arm", 62: "x86_64", 183: "aarch64"}
MACHINE_TO_ABI = {"aarch64": "arm64-v8a", "arm": "armeabi-v7a", "x86_64": "x86_64", "x86": "x86"}
THERMAL_STATUS = {0: "none", 1: "light", 2: "moderate", 3: "severe", 4: "critical",
                  5: "emergency", 6: "shutdown"}


class AdbError(JobFailed):
    """adb is missing, no usable device, or a call to the device failed (exit 1)."""


class BinaryError(BadInput):
    """A benchmark binary that cannot run on the phone (missing, not ELF, not executable, ABI)."""


def find_adb(path: str | None = None) -> str:
    """The adb executable: ``path`` when given, else ``adb`` on PATH."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise AdbError(f"adb not found at {path}")
        if not os.access(p, os.X_OK):
            raise AdbError(f"{path} is not executable (chmod +x {path})")
        return str(p)
    found = shutil.which("adb")
    if found is None:
        raise AdbError("adb is not installed or not on PATH: install Android platform-tools "
                       "(Debian/Ubuntu: apt-get install adb) or pass --adb PATH")
    return found


_NO_DEVICE = ("no Android device is attached (adb devices lists none); plug the phone in and "
              "enable USB debugging")
_STATES = {
    "unauthorized": "device {serial} is unauthorized: unlock the phone and accept the "
                    "'Allow USB debugging' prompt",
    "offline": "device {serial} is offline: reconnect the cable or run adb reconnect",
    "permissions": "no permission to open device {serial}: fix the udev rules "
                   "(https://developer.android.com/studio/run/device)",
}
_ADB_FAILURES: tuple[tuple[str, str], ...] = (
    (r"error: no devices/emulators found", _NO_DEVICE),
    (r"error: more than one device", "several devices are attached; pick one with --serial"),
    (r"error: device unauthorized", _STATES["unauthorized"]),
    (r"error: insufficient permissions", _STATES["permissions"]),
    (r"error: device (?:'[^']*' )?not found", "device {serial} not found: it was disconnected "
     "(or the serial is wrong; see adb devices)"),
    (r"error: device offline|error: closed|error: protocol fault",
     "device {serial} went offline or disconnected"),
)


def adb_failure(stderr: str, serial: str | None) -> str | None:
    """A clear sentence when ``stderr`` is an adb-level failure; None for a remote program error."""
    for pattern, message in _ADB_FAILURES:
        if re.search(pattern, stderr):
            return message.format(serial=f"'{serial}'" if serial else "")
    return None


@dataclass(frozen=True)
class Adb:
    """Run ``adb [-s serial] ...`` with a timeout; map adb's failures to ``AdbError``."""

    exe: str
    serial: str | None = None
    timeout_s: float = 120.0

    def call(self, args: Sequence[str], *, timeout_s: float | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [self.exe, *(["-s", self.serial] if self.serial else []), *args]
        limit = timeout_s or self.timeout_s
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                                  timeout=limit, check=False)
        except subprocess.TimeoutExpired:
            raise AdbError(f"'adb {' '.join(args)[:120]}' timed out after {limit:.0f} s") from None
        except OSError as exc:
            raise AdbError(f"cannot run adb at {self.exe}: {exc.strerror or exc}") from None
        if proc.returncode != 0:
            message = adb_failure(proc.stderr, self.serial)
            if message is not None:
                raise AdbError(message)
            if check:
                err = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
                detail = err[-1] if err else "no output"
                raise AdbError(f"'adb {' '.join(args)[:120]}' failed "
                               f"(exit {proc.returncode}): {detail}")
        return proc

    def shell(self, command: str, *, timeout_s: float | None = None,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.call(["shell", command], timeout_s=timeout_s, check=check)

    def push(self, local: str | Path, remote: str) -> None:
        self.call(["push", str(local), remote], timeout_s=max(self.timeout_s, 300.0))

    def pull(self, remote: str, local: str | Path) -> None:
        self.call(["pull", remote, str(local)], timeout_s=max(self.timeout_s, 300.0))

    def remove(self, *remote: str) -> None:
        self.shell("rm -rf " + " ".join(shlex.quote(r) for r in remote))


# The states `adb devices` prints (adb's ConnectionState names).
DEVICE_STATES = ("device", "offline", "unauthorized", "authorizing", "connecting", "bootloader",
                 "recovery", "rescue", "sideload", "host", "no permissions", "unknown")


def parse_devices(text: str) -> list[tuple[str, str]]:
    """(serial, state) pairs from ``adb devices`` output; ``AdbError`` when the output is not a
    device list (a broken adb, or another program on PATH called adb)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("* daemon", "adb server"))]
    if not lines or not lines[0].startswith("List of devices attached"):
        first = lines[0][:80] if lines else "no output"
        raise AdbError(f"'adb devices' did not print a device list (it printed: {first!r}); "
                       "is that adb working?")
    out = []
    for line in lines[1:]:
        parts = line.split(None, 1)
        state = parts[1].strip() if len(parts) > 1 else ""
        if len(parts) != 2 or not state.startswith(DEVICE_STATES):
            raise AdbError(f"'adb devices' printed a line that is not 'SERIAL STATE': "
                           f"{line[:80]!r}; is that adb working?")
        out.append((parts[0], state))
    return out


def select_device(exe: str, serial: str | None = None, timeout_s: float = 120.0) -> Adb:
    """Pick the phone: ``serial`` (or $ANDROID_SERIAL), else the only attached device."""
    listing = Adb(exe, timeout_s=30.0).call(["devices"]).stdout
    devices = parse_devices(listing)
    serial = serial or os.environ.get("ANDROID_SERIAL") or None
    if serial is None:
        if not devices:
            raise AdbError(_NO_DEVICE)
        if len(devices) > 1:
            names = ", ".join(s for s, _ in devices)
            raise AdbError(f"several devices are attached ({names}); pick one with --serial")
        serial = devices[0][0]
    states = dict(devices)
    if serial not in states:
        attached = ", ".join(states) or "none"
        raise AdbError(f"device '{serial}' not found (attached: {attached})")
    state = states[serial]
    if state != "device":
        key = "permissions" if "permission" in state else state
        known = _STATES.get(key)
        raise AdbError(known.format(serial=f"'{serial}'") if known
                       else f"device '{serial}' is {state}, not ready")
    return Adb(exe, serial=serial, timeout_s=timeout_s)


@dataclass(frozen=True)
class DeviceInfo:
    serial: str
    model: str
    soc: str
    abi: str
    abilist: tuple[str, ...]
    android: str
    sdk: str
    thermal: str | None = None
    props: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def describe(self) -> str:
        """For example ``Pixel 7 (gs201, arm64-v8a, Android 14)``."""
        return f"{self.model} ({self.soc}, {self.abi}, Android {self.android})"

    def to_dict(self) -> dict[str, object]:
        return {"serial": self.serial, "model": self.model, "soc": self.soc, "abi": self.abi,
                "abilist": list(self.abilist), "android": self.android, "sdk": self.sdk,
                "thermal": self.thermal, "soc_model": self.props.get("ro.soc.model"),
                "manufacturer": self.props.get("ro.product.manufacturer")}


def parse_getprop(text: str) -> dict[str, str]:
    """``[key]: [value]`` lines of ``adb shell getprop``."""
    return dict(re.findall(r"^\[([^\]]+)\]:\s*\[(.*)\]\s*$", text, flags=re.MULTILINE))


def parse_thermal(text: str) -> str | None:
    """``none (0)`` .. ``shutdown (6)`` from ``dumpsys thermalservice``; None when not printed."""
    m = re.search(r"Thermal Status:\s*(\d+)", text, flags=re.IGNORECASE)
    if m is None:
        return None
    code = int(m.group(1))
    return f"{THERMAL_STATUS.get(code, 'unknown')} ({code})"


def read_thermal(adb: Adb) -> str | None:
    proc = adb.shell("dumpsys thermalservice", check=False)
    return parse_thermal(proc.stdout) if proc.returncode == 0 else None


def read_device_info(adb: Adb) -> DeviceInfo:
    props = parse_getprop(adb.shell("getprop").stdout)
    abi = props.get("ro.product.cpu.abi", "")
    if not abi:
        raise AdbError(f"device '{adb.serial}' did not report ro.product.cpu.abi (getprop failed?)")
    abilist = tuple(a for a in props.get("ro.product.cpu.abilist", abi).split(",") if a)
    return DeviceInfo(
        serial=adb.serial or "",
        model=props.get("ro.product.model", "unknown model"),
        soc=props.get("ro.board.platform") or props.get("ro.hardware", "unknown SoC"),
        abi=abi,
        abilist=abilist or (abi,),
        android=props.get("ro.build.version.release", "?"),
        sdk=props.get("ro.build.version.sdk", "?"),
        thermal=read_thermal(adb),
        props=props,
    )


def elf_machine(path: str | Path) -> str:
    """``aarch64``/``arm``/``x86_64``/``x86`` from a binary's ELF header (read on the host)."""
    path = Path(path)
    if not path.is_file():
        raise BinaryError(f"{path}: benchmark binary not found")
    with path.open("rb") as fh:
        head = fh.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        raise BinaryError(f"{path}: not an ELF executable (no ELF magic); pass the Android build "
                          "of the tool")
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return ELF_MACHINES.get(machine, f"unknown machine {machine}")


def check_binary(path: str | Path) -> str:
    """Check a benchmark binary on the host; return its Android ABI (``arm64-v8a`` ...)."""
    machine = elf_machine(path)
    if not stat.S_IMODE(Path(path).stat().st_mode) & 0o111:
        raise BinaryError(f"{path}: not executable (chmod +x {path})")
    if machine not in MACHINE_TO_ABI:
        raise BinaryError(f"{path}: ELF for an {machine}, which no Android ABI runs")
    return MACHINE_TO_ABI[machine]


def check_abi(path: str | Path, binary_abi: str, device: DeviceInfo) -> None:
    """The phone must list the binary's ABI in ro.product.cpu.abilist."""
    if binary_abi not in device.abilist:
        raise BinaryError(f"{path}: built for {binary_abi}, but {device.model} runs "
                          f"{', '.join(device.abilist)}; use the {device.abi} build")
