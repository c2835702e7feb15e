"""ios_demo without a Mac: the hand-written Xcode project parses and is consistent, and the Swift
sources are at least well nested. (Building needs Xcode; see ios_demo/README.md.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from exporters.sync_demos import ANDROID_ASSETS, IOS_MODEL_DIR

ROOT = Path(__file__).resolve().parents[1]
IOS = ROOT / "ios_demo"
PBXPROJ = IOS / "EdgeKDDemo.xcodeproj" / "project.pbxproj"
SWIFT_FILES = ("EdgeKDDemoApp.swift", "ContentView.swift", "Classifier.swift", "Manifest.swift")
OBJECT_ID = re.compile(r"^[0-9A-F]{24}$")


class _Plist:
    """The old-style (OpenStep) property list syntax of project.pbxproj."""

    TOKEN = re.compile(r'\s+|/\*.*?\*/|//[^\n]*|"(?:[^"\\]|\\.)*"|[{}();=,]|[^\s{}();=,"]+', re.S)

    def __init__(self, text: str) -> None:
        self.tokens = [t for t in self.TOKEN.findall(text)
                       if t.strip() and not t.startswith(("/*", "//"))]
        self.i = 0

    def next(self) -> str:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, tok: str) -> None:
        got = self.next()
        assert got == tok, f"expected {tok!r} at token {self.i}, got {got!r}"

    def value(self) -> Any:
        tok = self.next()
        if tok == "{":
            out = {}
            while self.tokens[self.i] != "}":
                key = self.value()
                self.expect("=")
                out[key] = self.value()
                self.expect(";")
            self.next()
            return out
        if tok == "(":
            items = []
            while self.tokens[self.i] != ")":
                items.append(self.value())
                self.expect(",")
            self.next()
            return items
        assert tok not in "{}();=,", f"unexpected {tok!r} at token {self.i}"
        return tok[1:-1].replace('\\"', '"') if tok.startswith('"') else tok


def _references(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set().union(*(_references(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_references(v) for v in value)) if value else set()
    return {value} if isinstance(value, str) and OBJECT_ID.match(value) else set()


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    parser = _Plist(PBXPROJ.read_text())
    root = parser.value()
    assert parser.i == len(parser.tokens), "trailing tokens after the root dictionary"
    return root


def test_project_parses_and_every_reference_resolves(project: dict[str, Any]) -> None:
    objects = project["objects"]
    assert project["archiveVersion"] == "1" and project["objectVersion"] == "77"
    assert project["rootObject"] in objects
    assert all(OBJECT_ID.match(k) and "isa" in v for k, v in objects.items())
    dangling = _references(objects) - objects.keys()
    assert dangling == set()


def test_app_target_builds_the_synchronized_folder(project: dict[str, Any]) -> None:
    objects = project["objects"]
    (target,) = [o for o in objects.values() if o["isa"] == "PBXNativeTarget"]
    assert target["productType"] == "com.apple.product-type.application"
    (group_id,) = target["fileSystemSynchronizedGroups"]
    folder = IOS / objects[group_id]["path"]
    assert objects[group_id]["isa"] == "PBXFileSystemSynchronizedRootGroup"
    assert all((folder / f).is_file() for f in SWIFT_FILES)
    assert IOS_MODEL_DIR.is_relative_to(folder)  # synced models land inside the app's sources
    assert ANDROID_ASSETS == ROOT / "android_demo" / "app" / "src" / "main" / "assets"
    configs = [objects[c] for c in objects[target["buildConfigurationList"]]["buildConfigurations"]]
    assert sorted(c["name"] for c in configs) == ["Debug", "Release"]
    for c in configs:
        settings = c["buildSettings"]
        assert settings["GENERATE_INFOPLIST_FILE"] == "YES"
        assert settings["PRODUCT_BUNDLE_IDENTIFIER"] == "org.edgekd.demo"
    project_configs = objects[objects[project["rootObject"]]["buildConfigurationList"]]
    for c in project_configs["buildConfigurations"]:
        # exporters/coreml.py converts with minimum_deployment_target iOS 17
        assert objects[c]["buildSettings"]["IPHONEOS_DEPLOYMENT_TARGET"] == "17.0"


def _strip_swift(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r'"(?:[^"\\\n]|\\.)*"', '""', text)


@pytest.mark.parametrize("name", SWIFT_FILES)
def test_swift_sources_are_well_nested(name: str) -> None:
    code = _strip_swift((IOS / "EdgeKDDemo" / name).read_text())
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for ch in code:
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            assert stack and stack.pop() == pairs[ch], f"{name}: unbalanced {ch!r}"
    assert stack == [], f"{name}: unclosed {stack}"


def test_swift_uses_only_defined_accessors() -> None:
    text = (IOS / "EdgeKDDemo" / "Manifest.swift").read_text()
    defined = set(re.findall(r"func (\w+)\(_ key: String\)", text))
    used = set(re.findall(r"\.(\w+)\(\"[a-z_]+\"\)", text))
    assert used and used <= defined
    assert "@main" in (IOS / "EdgeKDDemo" / "EdgeKDDemoApp.swift").read_text()
