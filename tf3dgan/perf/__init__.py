"""Performance: the benchmark and its analytic FLOPs (:mod:`.benchmark`) and profiling (:mod:`.profiling`)."""
