"""Utility, forgetting and membership-inference metrics, KLOM included (plain numpy / float64, outside jit)."""

from jaxunlearn.metrics._forget_quality import EPSILON_CAP
from jaxunlearn.metrics._forget_quality import ForgetQuality
from jaxunlearn.metrics._forget_quality import challenge_score
from jaxunlearn.metrics._forget_quality import forget_quality
from jaxunlearn.metrics._klom import KLOM_BINS
from jaxunlearn.metrics._klom import KLOM_CLIP
from jaxunlearn.metrics._klom import KLOM_CONVENTION
from jaxunlearn.metrics._klom import KLOM_EPS
from jaxunlearn.metrics._klom import KLOM_PERCENTILES
from jaxunlearn.metrics._klom import klom
from jaxunlearn.metrics._klom import klom_summary
from jaxunlearn.metrics._klom import margins
from jaxunlearn.metrics._roc import auc
from jaxunlearn.metrics._roc import best_threshold_accuracy
from jaxunlearn.metrics._roc import roc_curve
from jaxunlearn.metrics._roc import tpr_at_fpr
from jaxunlearn.metrics._utility import InterclassConfusion
from jaxunlearn.metrics._utility import accuracy
from jaxunlearn.metrics._utility import accuracy_gaps
from jaxunlearn.metrics._utility import as_float64
from jaxunlearn.metrics._utility import interclass_confusion
from jaxunlearn.metrics._utility import logit_confidence
from jaxunlearn.metrics._utility import tow
from jaxunlearn.metrics._utility import zrf

__all__ = (
    "EPSILON_CAP", "ForgetQuality", "InterclassConfusion", "accuracy", "accuracy_gaps", "as_float64", "auc",
    "best_threshold_accuracy", "challenge_score", "forget_quality", "interclass_confusion",
    "logit_confidence", "roc_curve", "tow", "tpr_at_fpr", "zrf",
    "KLOM_BINS", "KLOM_CLIP", "KLOM_CONVENTION", "KLOM_EPS", "KLOM_PERCENTILES", "klom", "klom_summary", "margins",
)
