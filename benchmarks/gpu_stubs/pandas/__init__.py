"""Import-time stand-in for `pandas` on the GPU check machine: TransformerLens imports it at import time
for activation-patching tables that lens_steer never builds; using it raises."""


class DataFrame:  # noqa: D101
    def __init__(self, *args, **kwargs):
        raise RuntimeError("pandas is not installed on this machine (gpu_check.sh stand-in)")
