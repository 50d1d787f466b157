"""The token mixers, one file each, and the registry that maps a plan entry's mixer name to its class.

Adding a mixer: write its file (a `Mixer` subclass: see `base.py`), add its class to the tuple below.
"""

from sambay.model.mixers.attention import CrossAttention, FullAttention, SlidingWindowAttention
from sambay.model.mixers.base import Mixer, Outputs, StateSpec
from sambay.model.mixers.gmu import GMU
from sambay.model.mixers.mamba import Mamba
from sambay.model.mixers.mamba2 import Mamba2

MIXERS: dict[str, type[Mixer]] = {cls.name: cls for cls in (
    Mamba,
    Mamba2,
    SlidingWindowAttention,
    FullAttention,
    GMU,
    CrossAttention,
)}

__all__ = ["MIXERS", "Mixer", "Outputs", "StateSpec"]
