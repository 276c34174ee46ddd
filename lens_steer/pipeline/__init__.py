"""The main job's plumbing: stages cached by their inputs (and, with `reproduce`, the stages themselves)."""
