"""Benchmarks: score every exported artefact in its real runtime against the float models.

``python -m benchmarks.run`` (the harness, library in ``benchmarks.harness``: accuracy, latency,
the parity gate and its verdicts in ``gate.json``), ``benchmarks.report`` (results.md / CSV /
plots / the README table), ``benchmarks.android`` (phone timings), ``benchmarks.pipeline`` (the
main job), ``benchmarks.studies`` (one-off measurements). Importing this package imports nothing
heavy: the latency child processes start from it.
"""
