"""The studies and methods built on the layers below: the ISV search (`search/`), ensembles (`ensemble`),
the debiasing baselines (`baselines/`), the bias model organism (`organism/`), the later paper's protocol
(`protocol_v2`), layer sweeps, geometry, probes and per-item steerability.

May import: tasks, extract, forward, steering, model, data and the base modules; never pipeline, report or cli."""
