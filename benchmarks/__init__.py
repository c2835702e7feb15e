"""Benchmarks: score every exported artefact in its real runtime against the float models.

``python -m benchmarks.run`` (the harness: accuracy, latency, parity gate), ``benchmarks.report``
(results.md / CSV / plots / the README table), ``benchmarks.android`` (phone timings). Importing
this package imports nothing heavy: the latency child processes start from it.
"""
