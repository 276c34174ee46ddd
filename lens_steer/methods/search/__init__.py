"""The ISV search (Optuna TPE), one module per idea: `space` (what is searched and how it is judged, as data),
`storage` (where studies live, heartbeats, create/join/resume), `workers` (running trials under a shared budget),
`objective` (the BBQ validation objective), `run` (one axis's search end to end and its output files)."""
