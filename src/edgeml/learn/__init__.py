"""The learning core: pure, synchronous, no asyncio, MQTT or SQLite."""

from edgeml.learn.learner import Learner
from edgeml.learn.presets import build_model

__all__ = ["Learner", "build_model"]
