"""INT8 for every runtime: exact float rewrites, PT2E/ONNX quantization recipes, graph reports.

The seam used by ``exporters/{tflite,executorch,onnx,coreml}.py``:

- ``prepare_float_model(model, fmt)``: an exact, quantization-friendly float copy for ``fmt``.
- ``quantize_pt2e(model, example_inputs, calib_batches, fmt)``: PT2E static INT8, ready for the
  format's converter; ``tflite_convert_kwargs(fmt)`` gives extra converter arguments.
- ``quantize_onnx(fp32_path, out_path, calib_batches, input_name)``: ONNX Runtime QDQ INT8.
- ``quantize_recipe(fmt)``: what was done, for the manifest's ``quantization_recipe``.
- ``graph_report(path, fmt)``: float ops left, delegate partitions, quantized vs float nodes
  (ExecuTorch also needs the lowered graph module);
  ``graph_summary(report)`` makes it one line for the export summary.

Per-format recipes (``exporters.Int8Recipe`` on each format's registry entry: quantizer,
rewrites, annotation knobs) were chosen by timing fp32 and INT8 side by side and checking parity
on real images; see ``benchmarks/int8_speed.py``. Heavy backends are imported lazily.
"""

from __future__ import annotations

from exporters.int8.onnx_quant import quantize_onnx
from exporters.int8.quantize import quantize_pt2e, quantize_recipe, tflite_convert_kwargs
from exporters.int8.report import graph_report, graph_summary
from exporters.int8.rewrites import RewriteError, prepare_float_model

__all__ = [
    "RewriteError",
    "graph_report",
    "graph_summary",
    "prepare_float_model",
    "quantize_onnx",
    "quantize_pt2e",
    "quantize_recipe",
    "tflite_convert_kwargs",
]
