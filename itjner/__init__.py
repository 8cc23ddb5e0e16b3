"""ITJNER: image-text joint named entity recognition for tweets (Zhong et al., 2022).

Importing the package has no side effects; entry points call `itjner.runtime.prepare()`."""
from .configuration_itjner import ITJNERConfig, TrainConfig, preset
from .data import Entity, Prediction, Tweet, read_conll, write_conll

__all__ = ["ITJNERConfig", "TrainConfig", "preset", "Entity", "Prediction", "Tweet", "read_conll", "write_conll"]
__version__ = "0.2.0"
