"""The main job: `reproduce` (its stages, each cached by its inputs through `stage_cache`) and `results`, the
typed schema of the results.json it writes and the report reads."""
