from datasets import Dataset  # noqa: F401
