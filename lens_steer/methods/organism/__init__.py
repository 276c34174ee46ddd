"""The bias model organism: training with a planted stereotype (`train`), its optional LoRA adapters (`adapters`),
the build's time estimate (`estimate`) and the build with its acceptance card (`build`). The verdicts of the methods
run on it are the pipeline's (`lens_steer.pipeline.ground_truth`)."""
