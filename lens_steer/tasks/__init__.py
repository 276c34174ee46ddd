"""The benchmarks as tasks, one module each owning its prediction path and metrics: `bbq`, `mmlu`, `crows`,
`stereoset`; `registry` names them (bench -> task); `result` holds what a run returns; `store` keeps predictions.

May import: forward, steering, model, data and the base modules."""
