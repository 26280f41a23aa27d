"""Membership-inference attacks: the simple loss-based MIA, the SVC MIA-efficacy (SalUn / Unlearn-Sparse), LiRA and U-LiRA, and their leave-one-out pooling."""

from jaxunlearn.mia.lira import evaluate_attack
from jaxunlearn.mia.lira import lira
from jaxunlearn.mia.lira import ulira
from jaxunlearn.mia.pooling import ATTACKS
from jaxunlearn.mia.pooling import lira_attacks
from jaxunlearn.mia.pooling import ulira_attacks
from jaxunlearn.mia.simple import simple_mia
from jaxunlearn.mia.svc import SVC_CONVENTION
from jaxunlearn.mia.svc import svc_features
from jaxunlearn.mia.svc import svc_mia_efficacy

__all__ = ("ATTACKS", "evaluate_attack", "lira", "lira_attacks", "simple_mia", "ulira", "ulira_attacks",
           "SVC_CONVENTION", "svc_features", "svc_mia_efficacy")
