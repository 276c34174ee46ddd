from datasets import load_dataset  # noqa: F401
