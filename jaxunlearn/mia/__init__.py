"""Membership-inference attacks: the simple loss-based MIA, LiRA and U-LiRA, and their leave-one-out pooling."""

from jaxunlearn.mia.lira import evaluate_attack
from jaxunlearn.mia.lira import lira
from jaxunlearn.mia.lira import ulira
from jaxunlearn.mia.pooling import ATTACKS
from jaxunlearn.mia.pooling import lira_attacks
from jaxunlearn.mia.pooling import ulira_attacks
from jaxunlearn.mia.simple import simple_mia

__all__ = ("ATTACKS", "evaluate_attack", "lira", "lira_attacks", "simple_mia", "ulira", "ulira_attacks")
