"""Evaluation data: BBQ, MMLU, CrowS-Pairs; the data root; seeded splits.

May import: the base modules. Knows no model."""

from lens_steer.data.bbq import (
    BBQ_CATEGORIES,
    BbqItem,
    available_categories,
    load_bbq,
    load_bbq_file,
    load_bbq_hf,
    normalize_category,
    parse_bbq_row,
    partial_categories,
)
from lens_steer.data.crows import CROWS_BIAS_TYPES, CrowsPair, load_crows
from lens_steer.data.mmlu import MmluItem, load_mmlu, mmlu_subjects
from lens_steer.data.root import require_file, resolve_data_root
from lens_steer.data.splits import SPLITS, select_split, split_items

__all__ = [
    "BBQ_CATEGORIES",
    "BbqItem",
    "CROWS_BIAS_TYPES",
    "CrowsPair",
    "MmluItem",
    "SPLITS",
    "available_categories",
    "load_bbq",
    "load_bbq_file",
    "load_bbq_hf",
    "load_crows",
    "load_mmlu",
    "mmlu_subjects",
    "normalize_category",
    "parse_bbq_row",
    "partial_categories",
    "require_file",
    "resolve_data_root",
    "select_split",
    "split_items",
]
