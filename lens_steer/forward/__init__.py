"""Forward passes and what they read.

- `questions`: multiple-choice questions, their prompts in each format, what scoring one gives.
- `engine`: the forward engine, rows of token ids in, log-probs out (`run_rows`); one final norm and unembedding
  (`Unembed`), one log-softmax; how a forward runs is one value handed down (`RunPlan`).
- `prefix_tree`: the engine's layout for models taking a KV cache, each distinct token prefix run once.
- `residual_cache`: the engine's reuse of the residual entering the first steered block.
- `shared_prefix`: a prefix's KV cache extended by the rows after it (extraction's common system prompt).
- `scoring`: the protocols (cloze, letter, letter-calibrated, letter-permuted, generate), steered scoring.
- `continuation`: log-probs of continuation tokens and of texts (StereoSet, the self-debias baselines).
- `generation`: steered generation and the SVE paper's generate-and-parse protocol.
- `packed_cloze`: the differentiable cloze path (items packed under a tree mask) that trains the organism.

May import: steering, model, data (item types) and the base modules."""
