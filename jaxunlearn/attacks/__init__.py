"""Adversarial attacks (PGD on inputs or features, L-inf / L2)."""

from jaxunlearn.attacks._pgd import pgd

__all__ = ("pgd",)
