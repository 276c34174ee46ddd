"""Import-time stand-in for `datasets` on the GPU check machine (no network, no datasets wheel).

TransformerLens imports `datasets` at import time only for `utils.get_dataset`, which lens_steer never
calls; every entry point here raises.
"""


def load_dataset(*args, **kwargs):
    raise RuntimeError("datasets is not installed on this machine (gpu_check.sh stand-in)")


class Dataset:  # noqa: D101
    def __init__(self, *args, **kwargs):
        raise RuntimeError("datasets is not installed on this machine (gpu_check.sh stand-in)")


class IterableDataset(Dataset):  # noqa: D101
    pass
