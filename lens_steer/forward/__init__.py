"""Forward passes and what they read: multiple-choice scoring protocols (`scoring`: cloze, letter, generate)
over the prefix tree (`prefix_tree`), a shared prefix run once (`shared_prefix`), the residual reused from a
block (`residual_cache`), continuation log-probabilities (`continuation`) and steered generation (`generation`).

May import: steering, model, data (item types) and the base modules."""
