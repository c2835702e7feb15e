"""android_demo's Gradle wrapper: committed, new enough for the Android Gradle plugin, runnable.

The wrapper was generated with Debian's ``gradle`` package (``gradle wrapper --gradle-version
8.13``); its scripts and jar start whatever distribution ``gradle-wrapper.properties`` names. A
real build needs the network and the Android SDK, so the last test hands the committed wrapper a
stand-in distribution (a file: URL) and checks that ``./gradlew`` downloads, unpacks and starts it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "android_demo"
PROPERTIES = APP / "gradle" / "wrapper" / "gradle-wrapper.properties"
JAR = APP / "gradle" / "wrapper" / "gradle-wrapper.jar"

# The minimum Gradle of each Android Gradle plugin release this project has used, as documented
# in AGP's release notes ("Compatibility" table; AGP 8.13: Gradle 8.13 minimum and default,
# JDK 17, SDK Build Tools 35.0.0, maximum API level 36). Moving AGP means adding its row here.
AGP_MIN_GRADLE = {"8.13": (8, 13)}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def wrapper_gradle_version() -> tuple[int, ...]:
    props = dict(line.split("=", 1) for line in PROPERTIES.read_text().splitlines()
                 if "=" in line and not line.startswith("#"))
    found = re.search(r"gradle-(\d+(?:\.\d+)+)-(?:bin|all)\.zip$", props["distributionUrl"])
    assert found, f"{PROPERTIES}: unexpected distributionUrl {props['distributionUrl']}"
    return _version(found.group(1))


def agp_version() -> str:
    catalog = tomllib.loads((APP / "gradle" / "libs.versions.toml").read_text())
    return str(catalog["versions"]["agp"])


def test_wrapper_files_are_committed() -> None:
    for path in (APP / "gradlew", APP / "gradlew.bat", JAR, PROPERTIES):
        assert path.is_file(), path
    assert os.access(APP / "gradlew", os.X_OK), "gradlew must be executable"
    with zipfile.ZipFile(JAR) as jar:
        assert "org/gradle/wrapper/GradleWrapperMain.class" in jar.namelist()
    listed = subprocess.run(["git", "ls-files", "-s", "android_demo/gradlew"], cwd=ROOT,
                            capture_output=True, text=True, check=False).stdout
    if listed:  # a git checkout: the executable bit is committed too
        assert listed.startswith("100755"), listed


def test_wrapper_gradle_satisfies_the_android_gradle_plugin() -> None:
    agp = agp_version()
    series = ".".join(agp.split(".")[:2])
    assert series in AGP_MIN_GRADLE, (
        f"AGP {agp}: record its documented minimum Gradle in AGP_MIN_GRADLE")
    assert wrapper_gradle_version() >= AGP_MIN_GRADLE[series], (
        f"gradle-wrapper.properties names Gradle {wrapper_gradle_version()}, AGP {agp} needs "
        f">= {AGP_MIN_GRADLE[series]}")


def test_readme_names_the_versions_to_install() -> None:
    readme = (APP / "README.md").read_text()
    version = ".".join(map(str, wrapper_gradle_version()))
    for needle in ("JDK 17", "compileSdk", "36", "Build Tools", f"Gradle {version}", agp_version()):
        assert needle in readme, needle
    assert "Math.fma" not in readme  # issue 18 item 7: the resize uses no fused multiply-add


def _fake_distribution(tmp: Path) -> Path:
    """A zip laid out like a Gradle distribution whose launcher prints its arguments."""
    src = tmp / "src" / "org" / "gradle" / "launcher"
    src.mkdir(parents=True)
    (src / "GradleMain.java").write_text(
        "package org.gradle.launcher;\n"
        "public class GradleMain { public static void main(String[] a) {\n"
        "  System.out.println(\"stand-in gradle \" + String.join(\" \", a)); } }\n")
    classes = tmp / "classes"
    subprocess.run(["javac", "-d", str(classes), str(src / "GradleMain.java")], check=True)
    dist = tmp / "gradle-8.13-bin.zip"
    with zipfile.ZipFile(dist, "w") as z:
        for folder in ("gradle-8.13/", "gradle-8.13/lib/"):  # real distributions list folders
            z.writestr(folder, "")
        launcher = tmp / "gradle-launcher-8.13.jar"
        with zipfile.ZipFile(launcher, "w") as jar:
            jar.write(classes / "org/gradle/launcher/GradleMain.class",
                      "org/gradle/launcher/GradleMain.class")
        z.write(launcher, "gradle-8.13/lib/gradle-launcher-8.13.jar")
    return dist


@pytest.mark.skipif(shutil.which("javac") is None, reason="needs a JDK (javac)")
def test_gradlew_fetches_and_starts_the_named_distribution(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "gradle" / "wrapper").mkdir(parents=True)
    shutil.copy2(APP / "gradlew", project / "gradlew")
    shutil.copy2(JAR, project / "gradle" / "wrapper" / JAR.name)
    dist = _fake_distribution(tmp_path)
    text = re.sub(r"distributionUrl=.*", f"distributionUrl={dist.as_uri()}",
                  PROPERTIES.read_text())
    (project / "gradle" / "wrapper" / PROPERTIES.name).write_text(text)
    env = {**os.environ, "GRADLE_USER_HOME": str(tmp_path / "home")}
    proc = subprocess.run(["./gradlew", "assembleDebug"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "stand-in gradle assembleDebug" in proc.stdout
    assert list((tmp_path / "home" / "wrapper" / "dists").glob("gradle-8.13-bin/*/gradle-8.13"))
