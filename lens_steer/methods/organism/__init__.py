"""The bias model organism: training with a planted stereotype (`train`), the build with its acceptance card
(`build`) and the ground-truth verdicts of the methods run on it (`ground_truth`)."""
