"""Steering as values and hooks: `SteeringVector` and its file format (`vectors`), other tools' files (`formats`,
`export`, `hf`), the interventions (`interventions`: additive, ablation, ACE, LEACE, gated, optimized, model
diffing) and `steer()`, the one context manager that applies them at named hook points (`hooks`).

May import: model and the base modules."""
