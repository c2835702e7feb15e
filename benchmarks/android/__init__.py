"""Benchmarks on an Android phone over adb: drive the official tools, parse, report.

``python -m benchmarks.android --help`` for the CLI; docs/ANDROID_BENCHMARK.md for the workflow.
"""

from benchmarks.android.adb import Adb, AdbError, BinaryError, DeviceInfo
from benchmarks.android.parsers import (
    DeviceBenchmark,
    ParseError,
    parse_benchmark_model,
    parse_executor_runner,
    parse_minibench_json,
    parse_onnxruntime_perf_test,
)
from benchmarks.android.results import merge_results, to_result_row

__all__ = [
    "Adb",
    "AdbError",
    "BinaryError",
    "DeviceBenchmark",
    "DeviceInfo",
    "ParseError",
    "merge_results",
    "parse_benchmark_model",
    "parse_executor_runner",
    "parse_minibench_json",
    "parse_onnxruntime_perf_test",
    "to_result_row",
]
