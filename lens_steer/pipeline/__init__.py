"""The main job: `reproduce` (its stages, each cached by its inputs through `stage_cache`) and `results`, the
typed schema of the results.json it writes and the report reads.

May import: methods, tasks, extract, forward, steering, model, data and the base modules; never report or cli (the CLI
hands the report writer in)."""
