"""The demo apps' platform-side fixes, checked over their sources.

The Android framework (``app/``) and SwiftUI code cannot run here (no Android SDK, no Xcode), so
these tests read the sources for the constructs each fix relies on, and for the ones it removed:
a regression (a thumbnail camera, a non-premultiplied bitmap, an unsynchronized classifier, a
model loaded on the main thread, an old result left on screen, a missing label read as 0) fails
here. The pure-Kotlin core is compiled and run for real in ``test_kotlin_core.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "android_demo/app/src/main/kotlin/org/edgekd/demo"
IOS = ROOT / "ios_demo/EdgeKDDemo"


def _code(path: Path) -> str:
    """The source without comments (so that a comment naming the old API does not count)."""
    text = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _body(code: str, signature: str) -> str:
    """The brace-balanced body that follows ``signature``."""
    start = code.index(signature)
    open_at = code.index("{", start)
    depth = 0
    for i in range(open_at, len(code)):
        depth += {"{": 1, "}": -1}.get(code[i], 0)
        if depth == 0:
            return code[open_at + 1:i]
    raise AssertionError(f"unbalanced braces after {signature!r}")


def test_android_camera_takes_the_full_photo_not_a_thumbnail() -> None:
    main = _code(APP / "MainActivity.kt")
    assert "ActivityResultContracts.TakePicture()" in main and "TakePicturePreview" not in main
    # The photo goes to a FileProvider file the view model names.
    assert "cameraUri()" in main and "cameraUri" in _code(APP / "DemoViewModel.kt")
    paths = ROOT / "android_demo/app/src/main/res/xml/file_paths.xml"
    assert paths.is_file() and "<paths" in paths.read_text()


def test_android_bitmaps_stay_premultiplied() -> None:
    for path in APP.glob("*.kt"):
        assert "inPremultiplied" not in _code(path), path.name


def test_android_classifier_cannot_be_closed_mid_classification() -> None:
    code = _code(APP / "Classifier.kt")
    for fn in ("fun classify(", "override fun close("):
        before = code[:code.index(fn)].rstrip()
        assert before.endswith("@Synchronized"), fn
    assert 'check(!closed)' in _body(code, "fun classify(")


def test_android_model_lives_in_the_view_model_across_rotation() -> None:
    vm = _code(APP / "DemoViewModel.kt")
    assert re.search(r"class DemoViewModel\b[^{]*:\s*AndroidViewModel\(", vm) or \
        re.search(r"class DemoViewModel\b[^{]*ViewModel\(", vm)
    assert "Classifier.load(" in vm and "override fun onCleared()" in vm
    assert ".close()" in _body(vm, "override fun onCleared()")
    main = _code(APP / "MainActivity.kt")
    assert "Classifier.load(" not in main  # the activity never owns the model
    # A new pick cancels the older one and clears its photo before anything else.
    for fn in ("fun classify(", "fun failed("):
        body = _body(vm, fn)
        assert body.index("job?.cancel()") < body.index("photo = null"), fn


def test_ios_model_loads_off_the_main_thread() -> None:
    view = _code(IOS / "ContentView.swift")
    load = _body(view, "func load() async")
    assert "Task.detached" in load and "Classifier()" in load
    assert ".task { await model.load() }" in view
    # Classifier() is built nowhere else (no synchronous load at launch).
    assert view.count("Classifier()") == 1
    assert "Classifier()" not in _code(IOS / "EdgeKDDemoApp.swift")


def test_ios_new_pick_clears_the_old_result_first() -> None:
    run = _body(_code(IOS / "ContentView.swift"), "func run(")
    clear = [run.index(s) for s in ("image = nil", "result = nil", "error = nil")]
    assert max(clear) < run.index("Task {")
    assert "guard currentPick == pick" in run  # a slower, older pick never overwrites a newer one


def test_ios_missing_label_is_an_error_and_metadata_is_cross_checked() -> None:
    code = _code(IOS / "Classifier.swift")
    assert re.search(r"guard let p = byLabel\[label\] else \{\s*throw", code)
    assert "?? 0" not in code  # no silent probability 0
    check = _body(code, "static func crossCheck(")
    assert "classLabels" in check and "edgekd_manifest" in check and "throw" in check
    assert "try Classifier.crossCheck(" in code
