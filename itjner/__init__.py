"""ITJNER: image-text joint named entity recognition for tweets (Zhong et al., 2022)."""
import os

# Before torch loads OpenMP: threads that spin while waiting make a shared 2-core machine 10-30x slower (measured
# here); passive waiting costs nothing measurable when the machine is otherwise idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from .configuration_itjner import ITJNERConfig, TrainConfig, preset
from .data import Entity, Prediction, Tweet, read_conll, write_conll

__all__ = ["ITJNERConfig", "TrainConfig", "preset", "Entity", "Prediction", "Tweet", "read_conll", "write_conll"]
__version__ = "0.1.0"
