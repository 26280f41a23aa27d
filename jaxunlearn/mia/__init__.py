"""Membership-inference attacks: the simple loss-based MIA, LiRA and U-LiRA."""

from jaxunlearn.mia.lira import evaluate_attack
from jaxunlearn.mia.lira import lira
from jaxunlearn.mia.lira import ulira
from jaxunlearn.mia.simple import simple_mia

__all__ = ("evaluate_attack", "lira", "simple_mia", "ulira")
