"""One-off measurements, kept runnable: ``python -m benchmarks.studies.<name> --help``.

- ``train_speed``: training throughput (images/s) of the teacher, student and KD steps.
- ``int8_speed``: INT8 vs fp32 latency and accuracy, side by side, per runtime.
- ``export_check``: a real-model export checked artefact by artefact against torch.
"""
