"""A reproduction's report: the paper's numbers, the claims judged from the results, and their rendering.

May import: pipeline, methods, tasks, extract, forward, steering, model, data and the base modules; never cli. It reads
results and never runs a model."""
