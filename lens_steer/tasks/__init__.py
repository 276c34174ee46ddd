"""The benchmarks as tasks, one module each owning its prediction path and metrics: `bbq`, `mmlu`, `crows`,
`stereoset`; `result` holds what a run returns.

May import: forward, steering, model, data and the base modules."""
