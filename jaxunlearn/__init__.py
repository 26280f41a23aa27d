"""jaxunlearn: deep machine unlearning in JAX/Flax.

Subpackages: :mod:`jaxunlearn.data`, :mod:`jaxunlearn.models`, :mod:`jaxunlearn.train`,
:mod:`jaxunlearn.unlearn`, :mod:`jaxunlearn.metrics`, :mod:`jaxunlearn.mia`.
"""

__version__ = "0.1.0"
