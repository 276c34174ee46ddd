"""From texts to activations and directions: contrastive pair builders (`pairs`, `pair_sources`), last-token
activations and aggregators (`activations`), the on-disk activation cache (`activation_cache`), the per-pair
consistency predictor (`consistency`) and the interventions fitted from activations (`fit`).

May import: forward, steering, model, data and the base modules."""
