"""Parsers of the on-device tools' output, over fixtures written from shared/docs/ONDEVICE.md,
and the phone rows they turn into."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.android.adb import parse_devices, parse_getprop, parse_thermal
from benchmarks.android.parsers import (
    DeviceBenchmark,
    ParseError,
    parse_benchmark_model,
    parse_executor_runner,
    parse_minibench_json,
    parse_onnxruntime_perf_test,
)
from benchmarks.android.results import (
    ResultsError,
    combine_rows,
    error_row,
    merge_results,
    to_result_row,
)

FIXTURES = Path(__file__).parent / "fixtures" / "ondevice"
TOL = 1e-9  # relative: parsing is a unit conversion, nothing should be lost


def text(name: str) -> str:
    return (FIXTURES / name).read_text()


def approx(value: float) -> object:
    return pytest.approx(value, rel=TOL)


def test_classic_with_info_prefix_uses_the_measured_count_line() -> None:
    r = parse_benchmark_model(text("benchmark_model_classic_info.txt"), device="Pixel 7")
    assert r.tool == "benchmark_model"
    assert r.model_path == "/data/local/tmp/edgekd/mobilenet_v3_small_tflite_int8.tflite"
    assert r.init_ms == approx(12.5)
    assert r.first_ms == approx(6.12)
    assert r.warmup_avg_ms == approx(5.2105)
    assert r.avg_ms == approx(4.0204)
    # min/max/std from the second count= line (the first one is the warm-up)
    assert (r.min_ms, r.max_ms, r.std_ms) == (approx(3.95), approx(4.41), approx(0.085))
    assert r.runs == 50
    assert r.threads == 4
    assert r.delegate == "xnnpack"
    assert (r.memory_init_mb, r.memory_overall_mb) == (approx(3.2), approx(9.8))
    assert r.peak_memory_mb == approx(14.1)
    assert (r.p5_ms, r.p50_ms, r.p95_ms) == (None, None, None)
    assert r.device == "Pixel 7"


def test_logcat_prefix() -> None:
    r = parse_benchmark_model(text("benchmark_model_logcat.txt"))
    assert r.init_ms == approx(20.511)
    assert r.first_ms == approx(12.34)
    assert r.warmup_avg_ms == approx(9.1005)
    assert r.avg_ms == approx(8.03327)
    assert (r.min_ms, r.max_ms) == (approx(7.8), approx(9.1))
    assert r.runs == 125
    assert r.threads == 1
    assert r.peak_memory_mb is None and r.memory_init_mb is None


def test_percentile_fields() -> None:
    r = parse_benchmark_model(text("benchmark_model_percentiles.txt"))
    assert (r.p5_ms, r.p50_ms, r.p95_ms) == (approx(3.96), approx(4.005), approx(4.3))
    assert r.avg_ms == approx(4.0204)
    assert r.memory_init_mb == approx(2.95312)
    assert r.peak_memory_mb == approx(13.25)
    assert r.delegate is None  # no delegate line in this output, none given


def test_exponent_numbers() -> None:
    r = parse_benchmark_model(text("benchmark_model_exponent.txt"))
    assert r.avg_ms == approx(1234.57)
    assert r.warmup_avg_ms == approx(1523.41)
    assert r.first_ms == approx(1523.41)
    assert (r.min_ms, r.max_ms) == (approx(1200.0), approx(1523.41))
    assert r.init_ms == approx(2040.31)
    assert r.runs == 50


def test_classic_stat_line_alone_is_enough() -> None:
    out = "INFO: count=20 first=900 curr=800 min=790 max=900 avg=812.5 std=20\n"
    r = parse_benchmark_model(out, threads=2, delegate="xnnpack")
    assert r.avg_ms == approx(0.8125) and r.first_ms == approx(0.9) and r.runs == 20
    assert r.threads == 2 and r.delegate == "xnnpack"


def test_litert2_block_with_warmup_first() -> None:
    r = parse_benchmark_model(text("litert2_warmup_first.txt"))
    assert r.init_ms == approx(10.52)
    assert r.first_ms == approx(6.01)
    assert r.warmup_avg_ms == approx(5.20)
    assert r.avg_ms == approx(4.02)
    assert (r.min_ms, r.max_ms, r.std_ms) == (approx(3.95), approx(4.41), approx(0.08))
    assert r.runs == 50


def test_litert2_block_with_first_inference_and_prefix() -> None:
    r = parse_benchmark_model(text("litert2_first_inference.txt"), threads=4)
    assert r.init_ms == approx(25.1)
    assert r.first_ms == approx(9.87)
    assert r.warmup_avg_ms == approx(7.5)
    assert r.avg_ms == approx(6.25)
    assert (r.min_ms, r.max_ms, r.std_ms) == (approx(6.01), approx(7.9), approx(0.31))
    assert r.runs == 100 and r.threads == 4
    assert r.peak_memory_mb == approx(31.5)


def test_litert2_block_reads_units() -> None:
    r = parse_benchmark_model("Inference (avg): 850 us (10 runs)\nModel initialization: 0.5 s\n")
    assert r.avg_ms == approx(0.85) and r.init_ms == approx(500.0) and r.runs == 10


def test_no_timing_line_quotes_the_last_lines() -> None:
    earlier = "".join(f"INFO: earlier line {i}\n" for i in range(5))
    with pytest.raises(ParseError) as err:
        parse_benchmark_model(earlier + text("benchmark_model_no_timing.txt"))
    msg = str(err.value)
    assert msg.startswith("benchmark_model output has no timing line")
    assert "ERROR: Benchmarking failed." in msg
    assert "Registration failed" in msg
    assert "STARTING!" in msg and "earlier line" not in msg  # the last 10 lines only
    with pytest.raises(ParseError, match=r"\(no output\)"):
        parse_benchmark_model("")


@pytest.mark.parametrize(("output", "field"), [
    ("Inference timings in us: Init: 500, First inference: 900, Warmup (avg): 850, "
     "Inference (avg): 1e400\n", "avg_ms"),
    ("Inference timings in us: Init: 500, First inference: 900, Warmup (avg): 850, "
     "Inference (avg): -850\n", "avg_ms"),
    ("Inference timings in us: Init: -1, First inference: 900, Warmup (avg): 850, "
     "Inference (avg): 850\n", "init_ms"),
    ("BENCHMARK RESULTS\nInference (avg): 1e400 ms (50 runs)\n", "avg_ms"),
    ("count=50 first=900 curr=850 min=-800 max=900 avg=850 std=10\n", "min_ms"),
])
def test_impossible_timings_are_parse_errors(output: str, field: str) -> None:
    """``1e400`` parses as infinity and a time cannot be negative: neither is a status-ok row."""
    with pytest.raises(ParseError, match=f"impossible {field}"):
        parse_benchmark_model(output)
    with pytest.raises(ParseError, match="impossible avg_ms"):
        parse_executor_runner("Model executed successfully 10 time(s) in 1e400 ms.")
    with pytest.raises(ParseError, match="impossible avg_ms"):
        parse_onnxruntime_perf_test("Average inference time cost: -3.5 ms\n")


def test_results_are_strict_json(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"meta": {}, "rows": [{"mean_ms": Infinity}]}')
    with pytest.raises(ResultsError, match=r"results\.json: cannot read results"):
        merge_results(tmp_path, [], None)
    row = to_result_row(DeviceBenchmark("benchmark_model", avg_ms=4.0, device="P"), ARTIFACT)
    row["latency"]["default"]["mean_ms"] = float("nan")  # whatever slipped through: not written
    with pytest.raises(ValueError, match="not JSON compliant"):
        merge_results(tmp_path / "new", [row], None)
    assert not (tmp_path / "new" / "results.json").exists()


def test_executor_runner_total_over_runs() -> None:
    r = parse_executor_runner(text("executor_runner.txt"), threads=4)
    assert r.avg_ms == approx(201.0 / 50)
    assert r.runs == 50
    assert r.threads == 4
    assert r.model_path == "/data/local/tmp/edgekd/mobilenet_v3_small_executorch_fp32.pte"
    assert r.init_ms is None and r.p50_ms is None


def test_executor_runner_without_timing_line() -> None:
    with pytest.raises(ParseError, match="executor_runner output has no timing line") as err:
        parse_executor_runner(text("executor_runner_no_timing.txt"))
    assert "Loading of method forward failed" in str(err.value)


def test_minibench_json_one_record_per_model() -> None:
    records = parse_minibench_json(text("minibench_results.json"))
    by_name = {r.model_path: r for r in records}
    fp32 = by_name["mobilenet_v3_small_executorch_fp32"]
    assert fp32.avg_ms == approx(5.31) and fp32.init_ms == approx(48.2)
    assert fp32.peak_memory_mb == approx(62.4)
    assert fp32.delegate == "xnnpack" and fp32.tool == "minibench"
    assert fp32.device == "Google Pixel 7 Android 14"
    int8 = by_name["mobilenet_v3_small_executorch_int8"]
    assert int8.avg_ms == approx(2.87) and int8.peak_memory_mb is None


@pytest.mark.parametrize("bad", ["{}", "not json", '[{"benchmarkModel": {}}]',
                                 '[{"metric": "model_load_time(ms)", "actualValue": 3}]'])
def test_minibench_bad_json(bad: str) -> None:
    with pytest.raises(ParseError):
        parse_minibench_json(bad)


def test_onnxruntime_old_format_seconds_and_bytes() -> None:
    r = parse_onnxruntime_perf_test(text("onnxruntime_perf_test_old.txt"), threads=4)
    assert r.avg_ms == approx(62.29)
    assert r.p50_ms == approx(60.3)  # printed in seconds
    assert (r.p90_ms, r.p95_ms, r.p99_ms) == (approx(65.1), approx(66.4), approx(70.1))
    assert (r.min_ms, r.max_ms) == (approx(58.3), approx(71.2))
    assert r.init_ms == approx(54.3)
    assert r.first_ms == approx(71.0)
    assert r.peak_memory_mb == approx(114634752 / 2**20)
    assert r.runs == 100 and r.threads == 4


def test_onnxruntime_new_average_line() -> None:
    r = parse_onnxruntime_perf_test(text("onnxruntime_perf_test_new.txt"))
    assert r.avg_ms == approx(58.1)
    assert r.p50_ms == approx(57.7)
    assert r.peak_memory_mb == approx(100.0)
    with pytest.raises(ParseError, match="onnxruntime_perf_test output has no timing line"):
        parse_onnxruntime_perf_test("Session creation time cost: 0.05 s\n")


def test_device_facts() -> None:
    props = parse_getprop(text("getprop_pixel7.txt"))
    assert props["ro.product.model"] == "Pixel 7"
    assert props["ro.product.cpu.abilist"] == "arm64-v8a,armeabi-v7a,armeabi"
    assert parse_thermal(text("dumpsys_thermalservice.txt")) == "light (1)"
    assert parse_thermal("Thermal HAL not available\n") is None
    listing = ("* daemon not running; starting now at tcp:5037\nList of devices attached\n"
               "R58M12\tdevice\nemulator-5554\tunauthorized\n\n")
    assert parse_devices(listing) == [("R58M12", "device"), ("emulator-5554", "unauthorized")]


ARTIFACT = {"name": "mobilenet_v3_small_tflite_int8", "path": "m.tflite", "format": "tflite",
            "precision": "int8", "bytes": 1852345}


def test_result_rows_have_the_host_schema_and_combine_thread_counts() -> None:
    one = parse_benchmark_model(text("benchmark_model_percentiles.txt"), device="Pixel 7 (gs201)")
    four = parse_benchmark_model(text("benchmark_model_classic_info.txt"), device="Pixel 7 (gs201)")
    rows = [to_result_row(one, ARTIFACT), to_result_row(four, ARTIFACT)]
    assert rows[0]["location"] == "android" and rows[0]["status"] == "ok"
    assert rows[0]["runtime"] == "LiteRT benchmark_model"
    assert rows[0]["size_bytes"] == 1852345 and rows[0]["precision"] == "int8"
    [row] = combine_rows(rows)
    assert set(row["latency"]) == {"1", "4"}
    assert row["latency"]["1"]["p50_ms"] == approx(4.005)
    assert row["latency"]["4"]["p50_ms"] is None
    assert row["latency"]["4"]["mean_ms"] == approx(4.0204)
    assert {"p50_ms", "p90_ms", "p99_ms", "mean_ms", "runs"} <= set(row["latency"]["1"])
    assert row["load_ms"] == approx(11.02)
    assert row["peak_memory_mb"] == approx(14.1)  # the larger of the two runs
    assert row["status"] == "ok" and "errors" not in row


def test_failed_thread_count_is_listed_not_hidden() -> None:
    ok = to_result_row(DeviceBenchmark("benchmark_model", avg_ms=3.0, threads=1, device="P"),
                       ARTIFACT)
    bad = error_row(ARTIFACT, "benchmark_model", "P", "no timing line")
    [row] = combine_rows([ok, bad])
    assert row["status"] == "ok" and row["errors"] == ["no timing line"]
    [only_bad] = combine_rows([bad])
    assert only_bad["status"] == "no timing line" and only_bad["latency"] == {}


def test_merge_keeps_host_rows_and_replaces_the_same_phone_row(tmp_path: Path) -> None:
    host = {"name": ARTIFACT["name"], "runtime": "LiteRT benchmark_model", "device": "x86 host",
            "location": "host", "status": "ok", "latency": {"1": {"mean_ms": 9.0}}}
    other_phone = {**host, "device": "Galaxy S23", "location": "android"}
    (tmp_path / "results.json").write_text(json.dumps({"meta": {"host": "ci"},
                                                       "rows": [host, other_phone]}))
    rec = DeviceBenchmark("benchmark_model", avg_ms=4.0, threads=4, device="Pixel 7")
    merge_results(tmp_path, [to_result_row(rec, ARTIFACT)], {"description": "Pixel 7"})
    rec2 = DeviceBenchmark("benchmark_model", avg_ms=3.5, threads=4, device="Pixel 7")
    merge_results(tmp_path, [to_result_row(rec2, ARTIFACT)], {"description": "Pixel 7"})
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["meta"]["host"] == "ci" and "Pixel 7" in data["meta"]["android_devices"]
    assert [r["device"] for r in data["rows"]] == ["x86 host", "Galaxy S23", "Pixel 7"]
    assert data["rows"][2]["latency"]["4"]["mean_ms"] == 3.5
    assert list(tmp_path.iterdir()) == [tmp_path / "results.json"]  # no temp file left


def test_merge_refuses_a_file_that_is_not_results(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"something": 1}')
    with pytest.raises(ResultsError, match="not a results file"):
        merge_results(tmp_path, [], None)
    new = tmp_path / "fresh"
    merge_results(new, [], None)
    assert json.loads((new / "results.json").read_text()) == {"meta": {}, "rows": []}
