"""Benchmarks (never part of the test run).

``python -m bench [--quick] [--json FILE] [--only NAME[,NAME]]`` runs every scenario and prints one
table: our figure, a baseline measured in the same run, their ratio and the target. One module per
scenario, each with ``run(quick: bool) -> Row``; ``python -m bench.<name>`` runs one alone.
``python -m bench.distill_quality`` (accuracy, not speed) and ``python -m bench.jpeg_decoders`` (the streamed loader's
decoder, one thread) are apart from the suite.
"""

#: the suite's scenarios, in the order they run: module names under ``bench/`` (what ``--only`` takes)
SCENARIOS = ("trainable_overhead", "distill_cost", "data_pipeline", "stream_pipeline", "sweep_overhead", "search_efficiency",
             "analysis_load", "gpu_packing", "multi_worker", "process_cost")
