"""The model: loading (embedded SmolLM2, Gemma 3 270M, checkpoints, tiny test models) and the `HookedModel`
protocol (`load`), the per-architecture table (`architectures`), tokenising and padding (`tokens`), chat-template
rendering (`chat`), the one fingerprint of a model's weights that every model-keyed cache records (`fingerprint`).
What a device computes natively (bf16 or not) and the training precision that follows (`hardware`).
The only place that knows how a model is built.

May import: the base modules."""
