"""The one typed place for a model's configuration.

``ModelConfig`` says which network to build and on what image shape. It is written as
``config.json`` next to every checkpoint and read back on resume, evaluation and sampling,
so a checkpoint can never be loaded into the wrong network.
"""

import dataclasses
import json
from typing import Optional, Tuple
from pixelcnn_pp.errors import InvalidInputError

__all__ = ["ModelConfig"]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a trained network.

    model: "pixelcnn_pp" (this paper) or "pixelcnn" (the masked-convolution baseline).
    image_shape: (H, W, C) of the training images; C is 3 or 1.
    The PixelCNN++ fields mirror the original's flags; num_layers / num_filters are the
    baseline's.
    """
    model: str = "pixelcnn_pp"
    image_shape: Tuple[int, int, int] = (32, 32, 3)
    nr_resnet: int = 5
    nr_filters: int = 160
    nr_logistic_mix: int = 10
    resnet_nonlinearity: str = "concat_elu"
    dropout_p: float = 0.5
    num_classes: Optional[int] = None
    energy_distance: bool = False
    num_layers: int = 15
    num_filters: int = 128

    def __post_init__(self):
        object.__setattr__(self, "image_shape", tuple(int(s) for s in self.image_shape))
        if self.model not in ("pixelcnn_pp", "pixelcnn"):
            raise InvalidInputError(f"model must be 'pixelcnn_pp' or 'pixelcnn', got {self.model!r}")
        if len(self.image_shape) != 3 or self.image_shape[2] not in (1, 3):
            raise InvalidInputError(f"image_shape must be (H, W, 1 or 3), got {self.image_shape}")

    @property
    def num_channels(self):
        return self.image_shape[2]

    def build(self, seed=None):
        """A fresh, unbuilt keras model of this configuration."""
        if self.model == "pixelcnn":
            from pixelcnn_pp.baseline import PixelCNN
            return PixelCNN(num_layers=self.num_layers, num_filters=self.num_filters,
                            num_channels=self.num_channels)
        from pixelcnn_pp.model import PixelCNNPP
        return PixelCNNPP(
            nr_resnet=self.nr_resnet, nr_filters=self.nr_filters,
            nr_logistic_mix=self.nr_logistic_mix, resnet_nonlinearity=self.resnet_nonlinearity,
            dropout_p=self.dropout_p, num_classes=self.num_classes,
            energy_distance=self.energy_distance, num_channels=self.num_channels, seed=seed)

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["image_shape"] = list(self.image_shape)
        return d

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            # A typo'd key must not be silently ignored.
            raise InvalidInputError(f"unknown model config keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))

    def differences(self, other):
        """{field: (self value, other value)} for fields that differ."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}
