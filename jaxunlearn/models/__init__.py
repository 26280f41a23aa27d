"""Models: MLP, small CNN, All-CNN, ResNet-18 (width multiplier), WideResNets, airbench94 and a small ViT as pure pytrees."""

from jaxunlearn.models._airbench import AirbenchNet
from jaxunlearn.models._airbench import CIFAR10_MEAN
from jaxunlearn.models._airbench import CIFAR10_STD
from jaxunlearn.models._nets import MLP
from jaxunlearn.models._nets import CNN
from jaxunlearn.models._nets import AllCNN
from jaxunlearn.models._nets import ResNet18
from jaxunlearn.models._nets import WideResNet
from jaxunlearn.models._vit import ViT
from jaxunlearn.models._registry import MODEL_NAMES
from jaxunlearn.models._registry import Model
from jaxunlearn.models._registry import create_airbench
from jaxunlearn.models._registry import create_model

__all__ = (
    "AirbenchNet", "AllCNN", "CIFAR10_MEAN", "CIFAR10_STD", "CNN", "MLP", "MODEL_NAMES", "Model", "ResNet18",
    "ViT", "WideResNet", "create_airbench", "create_model",
)
