"""Model-free moderation: policies, prompt-ensembled class banks, decisions, calibration.

The public names of :mod:`~clipsieve.moderation.policy`, :mod:`~clipsieve.moderation.scoring`,
:mod:`~clipsieve.moderation.head` (the scan head) and :mod:`~clipsieve.moderation.captions` are
re-exported here. Calibration lives in :mod:`clipsieve.moderation.calibrate` and is imported
from there, so that moderating does not pay for importing scikit-learn.
"""

from clipsieve.moderation.captions import Caption, CaptionSource, read_items_jsonl
from clipsieve.moderation.head import CaptionModeration, ItemModeration, ModerationHead
from clipsieve.moderation.policy import (
    MIN_CATEGORY_PROMPTS,
    Category,
    NeutralClass,
    Policy,
    PolicyError,
    SpecialCare,
    list_policies,
    load_policy,
    policy_from_dict,
)
from clipsieve.moderation.scoring import (
    DECISIONS,
    LOW_AGREEMENT_CLIP_SCORE,
    MIN_THRESHOLD,
    ClassBank,
    ModerationResult,
    TextEncoder,
    bank_cache_key,
    build_class_embeddings,
    clip_score,
    moderate,
    moderate_texts,
)

__all__ = [
    "DECISIONS",
    "LOW_AGREEMENT_CLIP_SCORE",
    "MIN_CATEGORY_PROMPTS",
    "MIN_THRESHOLD",
    "Caption",
    "CaptionModeration",
    "CaptionSource",
    "Category",
    "ClassBank",
    "ItemModeration",
    "ModerationHead",
    "ModerationResult",
    "NeutralClass",
    "Policy",
    "PolicyError",
    "SpecialCare",
    "TextEncoder",
    "bank_cache_key",
    "build_class_embeddings",
    "clip_score",
    "list_policies",
    "load_policy",
    "moderate",
    "moderate_texts",
    "policy_from_dict",
    "read_items_jsonl",
]
