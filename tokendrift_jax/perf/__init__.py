"""Performance: analytic FLOPs, HLO reading, step benchmarks, drift timing, bf16 smoke check."""
