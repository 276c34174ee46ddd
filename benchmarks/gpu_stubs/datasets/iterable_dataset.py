from datasets import IterableDataset  # noqa: F401
