"""Models: MLP, small CNN, All-CNN, ResNet-18 (width multiplier) and WideResNets as pure pytrees."""

from jaxunlearn.models._nets import MLP
from jaxunlearn.models._nets import CNN
from jaxunlearn.models._nets import AllCNN
from jaxunlearn.models._nets import ResNet18
from jaxunlearn.models._nets import WideResNet
from jaxunlearn.models._registry import MODEL_NAMES
from jaxunlearn.models._registry import Model
from jaxunlearn.models._registry import create_model

__all__ = ("MLP", "CNN", "AllCNN", "ResNet18", "WideResNet", "MODEL_NAMES", "Model", "create_model")
