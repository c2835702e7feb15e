"""Build and run android_demo's pure-Kotlin core module with a real kotlinc, for the tests.

``scripts/kotlin.sh`` installs the npm registry's ``kotlin-compiler`` into ``.tools/`` if missing;
the core sources (main + test) compile in ONE kotlinc call into
``build/kotlin_core/<digest>/core.jar``, reused while the sources and the compiler stay the same.
The core parses JSON with ``org.json``, built into Android; here it is Debian's
``libandroid-json-java`` (the same implementation, from the Android source tree; .ci/run installs
it), found at ``$EDGEKD_ORG_JSON_JAR`` or under /usr/share/java.
Tests skip when java, kotlinc or org.json cannot be had, unless ``EDGEKD_REQUIRE_KOTLIN=1``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from functools import lru_cache
from pathlib import Path

from kd_core.io import atomic_path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "android_demo" / "core"
SOURCES = (CORE / "src" / "main" / "kotlin", CORE / "src" / "test" / "kotlin")
BUILD = ROOT / "build" / "kotlin_core"
ORG_JSON_JARS = (Path("/usr/share/java/com.android.json.jar"),
                 Path("/usr/share/maven-repo/com/android/json/debian/json-debian.jar"))


class KotlinUnavailable(RuntimeError):
    """No JDK or no kotlinc on this machine (a reason to skip, not a failure)."""


def required() -> bool:
    return os.environ.get("EDGEKD_REQUIRE_KOTLIN", "") not in ("", "0")


def kotlin_sources() -> list[Path]:
    return sorted(p for d in SOURCES for p in d.rglob("*.kt"))


@lru_cache(maxsize=1)
def kotlinc() -> Path:
    if shutil.which("java") is None:
        raise KotlinUnavailable("java is not installed")
    proc = subprocess.run([str(ROOT / "scripts" / "kotlin.sh")], capture_output=True, text=True,
                          timeout=600, check=False)
    if proc.returncode != 0:
        raise KotlinUnavailable(proc.stderr.strip() or "scripts/kotlin.sh failed")
    return Path(proc.stdout.strip().splitlines()[-1])


def _lib(name: str) -> Path:
    return kotlinc().parents[1] / "lib" / name


@lru_cache(maxsize=1)
def org_json_jar() -> Path:
    """Android's org.json for the JVM (Debian package libandroid-json-java)."""
    override = os.environ.get("EDGEKD_ORG_JSON_JAR")
    for jar in (Path(override),) if override else ORG_JSON_JARS:
        if jar.is_file():
            return jar
    raise KotlinUnavailable("org.json is missing: apt-get install libandroid-json-java "
                            "(or set EDGEKD_ORG_JSON_JAR to Android's org.json jar)")


@lru_cache(maxsize=1)
def core_classpath() -> str:
    """Compile (or reuse) the core module; return a java classpath with its runtime jars."""
    compiler = kotlinc()
    json_jar = org_json_jar()
    digest = hashlib.sha256(f"{compiler}\0{json_jar}".encode())
    for src in kotlin_sources():
        digest.update(src.relative_to(ROOT).as_posix().encode() + b"\0" + src.read_bytes())
    jar = BUILD / digest.hexdigest()[:16] / "core.jar"
    if not jar.is_file():
        with atomic_path(jar) as tmp:
            _compile(compiler, tmp.with_suffix(".jar"))
            tmp.with_suffix(".jar").rename(tmp)
    jars = (jar, _lib("kotlin-stdlib.jar"), _lib("kotlin-test.jar"), json_jar)
    return os.pathsep.join(str(p) for p in jars)


def _compile(compiler: Path, out: Path) -> None:
    classpath = os.pathsep.join((str(_lib("kotlin-test.jar")), str(org_json_jar())))
    cmd = [str(compiler), "-jvm-target", "17", "-nowarn", "-cp", classpath,
           "-d", str(out), *(str(d) for d in SOURCES)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"kotlinc failed on android_demo/core:\n{proc.stdout}\n{proc.stderr}")
    print(f"compiled android_demo/core in {time.perf_counter() - start:.1f} s")


def run_java(main_class: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["java", "-cp", core_classpath(), main_class, *args],
                          capture_output=True, text=True, timeout=600, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{main_class} {' '.join(args[:3])} … exited {proc.returncode}:\n"
                             f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The core module's test CLI (android_demo/core/src/test/.../PreprocessCli.kt)."""
    return run_java("org.edgekd.core.PreprocessCliKt", *args, check=check)


def classpath_or_skip() -> str:
    """For fixtures: the classpath, or a skip (a failure under EDGEKD_REQUIRE_KOTLIN=1)."""
    import pytest

    try:
        return core_classpath()
    except KotlinUnavailable as exc:
        if required():
            pytest.fail(f"EDGEKD_REQUIRE_KOTLIN is set but Kotlin is unavailable: {exc}")
        pytest.skip(f"Kotlin unavailable: {exc}")
