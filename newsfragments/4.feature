Benchmark suite (bench/run) comparing pylon_ai with LiteLLM and Portkey on one pinned core, with micro-benchmarks of the hot path.
