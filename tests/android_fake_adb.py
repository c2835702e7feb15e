"""A fake ``adb`` for tests: a script on PATH that records each call and replays canned outputs.

Rules are tried in order; the first whose regex matches the space-joined argv answers with
``stdout``/``stdout_file``, ``stderr`` and ``rc`` (and ``pull_from`` copies a file to the pull's
destination). A push of a missing local file fails as adb does; pushed files are kept under
``<dir>/pushed`` so tests can read what reached the "phone".
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "ondevice"
SERIAL = "R58M12"
REMOTE = "/data/local/tmp/edgekd"

FAKE_ADB = """#!{python}
import json, os, re, shutil, sys
args = sys.argv[1:]
state = os.environ["FAKE_ADB_DIR"]
with open(os.path.join(state, "calls.jsonl"), "a") as f:
    f.write(json.dumps(args) + "\\n")
if "push" in args:  # like adb: a missing local file fails; keep a copy of what was pushed
    src, dst = args[args.index("push") + 1:args.index("push") + 3]
    if not os.path.exists(src):
        sys.stderr.write("adb: error: cannot stat '%s': No such file or directory\\n" % src)
        sys.exit(1)
    shutil.copy(src, os.path.join(state, "pushed", os.path.basename(dst)))
line = " ".join(args)
with open(os.path.join(state, "rules.json")) as f:
    rules = json.load(f)
for rule in rules:
    if re.search(rule["match"], line):
        if "pull_from" in rule:
            shutil.copy(rule["pull_from"], args[-1])
        out = rule.get("stdout", "")
        if "stdout_file" in rule:
            with open(rule["stdout_file"]) as f:
                out = f.read()
        sys.stdout.write(out)
        sys.stderr.write(rule.get("stderr", ""))
        sys.exit(rule.get("rc", 0))
sys.stderr.write("fake adb: no rule for: " + line + "\\n")
sys.exit(97)
"""


class FakeAdb:
    def __init__(self, root: Path) -> None:
        self.dir = root / "fake_adb"
        (self.dir / "pushed").mkdir(parents=True)
        self.bin = root / "bin"
        self.bin.mkdir()
        script = self.bin / "adb"
        script.write_text(FAKE_ADB.format(python=sys.executable))
        script.chmod(0o755)

    def rules(self, rules: list[dict[str, Any]]) -> None:
        (self.dir / "rules.json").write_text(json.dumps(rules))

    def calls(self) -> list[list[str]]:
        log = self.dir / "calls.jsonl"
        return [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []


def phone_rules(devices: str = f"{SERIAL}\tdevice\n", **override: dict[str, Any]
                ) -> list[dict[str, Any]]:
    """A Pixel 7 whose benchmark_model prints the percentile fixture at 1 thread, classic at 4."""
    rules = {
        "devices": {"match": r"^devices$", "stdout": f"List of devices attached\n{devices}\n"},
        "getprop": {"match": r"shell getprop$",
                    "stdout_file": str(FIXTURES / "getprop_pixel7.txt")},
        "thermal": {"match": r"shell dumpsys thermalservice$",
                    "stdout_file": str(FIXTURES / "dumpsys_thermalservice.txt")},
        "mkdir": {"match": r"shell mkdir -p ", "stdout": ""},
        "push": {"match": r" push ", "stdout": "1 file pushed, 0 skipped. 31.2 MB/s\n"},
        "chmod": {"match": r"shell chmod 755 ", "stdout": ""},
        "bench1": {"match": r"benchmark_model --graph=\S+ --num_threads=1 ",
                   "stdout_file": str(FIXTURES / "benchmark_model_percentiles.txt")},
        "bench4": {"match": r"benchmark_model --graph=\S+ --num_threads=4 ",
                   "stderr": (FIXTURES / "benchmark_model_classic_info.txt").read_text()},
        "runner": {"match": r"executor_runner --model_path=",
                   "stderr": (FIXTURES / "executor_runner.txt").read_text()},
        "rm": {"match": r"shell rm -rf ", "stdout": ""},
    }
    rules.update(override)
    return list(rules.values())


def make_elf(path: Path, machine: int = 183, executable: bool = True) -> Path:
    """A file with a real ELF header (64-bit little-endian; 183 = aarch64, 62 = x86_64)."""
    head = bytearray(64)
    head[:7] = b"\x7fELF\x02\x01\x01"
    head[16:18] = (3).to_bytes(2, "little")  # ET_DYN, as NDK executables are PIE
    head[18:20] = machine.to_bytes(2, "little")
    path.write_bytes(bytes(head) + b"\0" * 64)
    path.chmod(0o755 if executable else 0o644)
    return path


def install_fake_adb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeAdb:
    adb = FakeAdb(tmp_path)
    monkeypatch.setenv("PATH", f"{adb.bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_DIR", str(adb.dir))
    monkeypatch.delenv("ANDROID_SERIAL", raising=False)
    return adb


def write_contract_manifest(folder: Path, entries: list[dict[str, Any]]) -> Path:
    """A manifest that ``kd_core.deploy.load_manifest`` accepts for files already in ``folder``
    (``name``, ``path``, ``format``, ``precision`` per entry; sha256 and bytes measured)."""
    from kd_core.data.transforms import Preprocessing
    from kd_core.deploy import Decision, Manifest, ManifestEntry, write_manifest
    from kd_core.io import path_bytes, sha256_file

    decision, prep = Decision(("other", "melanoma"), 1, 1.0, 0.5), Preprocessing(size=32)
    arts = tuple(ManifestEntry(
        name=e["name"], path=e["path"], format=e["format"], precision=e["precision"],
        input={"name": "image", "shape": [1, 3, 32, 32]}, output={"name": "logits",
                                                                 "shape": [1, 2]},
        decision=decision, preprocessing=prep, bytes=path_bytes(folder / e["path"]),
        sha256=sha256_file(folder / e["path"])) for e in entries)
    return write_manifest(Manifest(decision, prep, arts), folder)

