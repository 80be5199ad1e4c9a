"""The one typed place for configuration; every default is written here once.

``ModelConfig`` says which network to build and on what image shape. It is written as
``config.json`` next to every checkpoint and read back on resume, evaluation and sampling,
so a checkpoint can never be loaded into the wrong network.

``TrainConfig`` holds every setting of a training run: ``train.py``'s flags are made from its
fields and defaults (pixelcnn_pp/cli/train.py), and its model fields take their defaults from
``ModelConfig``.

No TensorFlow here: the command-line layer reads these defaults before TensorFlow starts.
"""

import dataclasses
import json
import math
import numbers
from typing import Optional, Tuple

from pixelcnn_pp.errors import InvalidInputError, UsageError

__all__ = ["ModelConfig", "TrainConfig", "PRECISIONS"]

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a trained network.

    model: "pixelcnn_pp" (this paper) or "pixelcnn" (the masked-convolution baseline).
    image_shape: (H, W, C) of the training images, C 3 or 1; (H, W) of code maps.
    num_categories: K of a prior over codes in [0, K) (the K-way head), else None.
    spatial_channels: D of the spatial condition maps (B, Hs, Ws, D), else None.
    The PixelCNN++ fields mirror the original's flags (and its defaults, the paper's
    CIFAR-10 model); num_layers / num_filters are the baseline's.
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
    num_categories: Optional[int] = None
    spatial_channels: Optional[int] = None

    def __post_init__(self):
        object.__setattr__(self, "image_shape", tuple(int(s) for s in self.image_shape))
        if self.model not in ("pixelcnn_pp", "pixelcnn"):
            raise InvalidInputError(f"model must be 'pixelcnn_pp' or 'pixelcnn', got "
                                    f"{self.model!r}")
        if self.num_categories:
            if len(self.image_shape) != 2:
                raise InvalidInputError(f"a prior over codes takes (H, W) code maps; got "
                                        f"image_shape {self.image_shape}")
        elif len(self.image_shape) != 3 or self.image_shape[2] not in (1, 3):
            raise InvalidInputError(f"image_shape must be (H, W, 1 or 3), got "
                                    f"{self.image_shape}")
        if (self.num_categories or self.spatial_channels) and self.model != "pixelcnn_pp":
            raise InvalidInputError("codes and spatial conditions are for PixelCNN++ "
                                    "(--model pixelcnn_pp)")

    @classmethod
    def for_tf1(cls, image_shape=None, **model_flags):
        """The configuration of an original TF1 checkpoint, which records none: the model
        flags it was trained with (nr_resnet, nr_filters, nr_logistic_mix,
        resnet_nonlinearity, num_classes (0 or None: unconditional), energy_distance) on
        ``image_shape`` (default 32x32x3), dropout off (inference)."""
        flags = dict(model_flags)
        flags["num_classes"] = flags.get("num_classes") or None
        return cls(image_shape=tuple(image_shape or (32, 32, 3)), dropout_p=0.0, **flags)

    @property
    def num_channels(self):
        return self.image_shape[2] if len(self.image_shape) == 3 else 1

    def build(self, seed=None, fast_ops=False):
        """A fresh, unbuilt keras model of this configuration. ``fast_ops``: its speed
        choice (pixelcnn_pp/fast_ops.py), made once here for the model's life."""
        if self.model == "pixelcnn":
            from pixelcnn_pp.baseline import PixelCNN
            return PixelCNN(num_layers=self.num_layers, num_filters=self.num_filters,
                            num_channels=self.num_channels, fast_ops=fast_ops)
        from pixelcnn_pp.model import PixelCNNPP
        return PixelCNNPP(
            nr_resnet=self.nr_resnet, nr_filters=self.nr_filters,
            nr_logistic_mix=self.nr_logistic_mix, resnet_nonlinearity=self.resnet_nonlinearity,
            dropout_p=self.dropout_p, num_classes=self.num_classes,
            energy_distance=self.energy_distance, num_channels=self.num_channels, seed=seed,
            fast_ops=fast_ops, num_categories=self.num_categories,
            spatial_channels=self.spatial_channels)

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
            raise InvalidInputError(f"unknown model config keys {unknown}; known: "
                                    f"{sorted(known)}")
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


_M = ModelConfig   # the model fields' defaults below are ModelConfig's


@dataclasses.dataclass
class TrainConfig:
    """All of train.py's flags: the original's (with its defaults), then ours."""
    data_dir: str = "data_files"
    save_dir: str = "save"
    data_set: str = "demo"     # Deviation: the offline demo set (the original's: cifar)
    save_interval: int = 20
    load_params: bool = False
    model: str = _M.model
    nr_resnet: int = _M.nr_resnet
    nr_filters: int = _M.nr_filters
    nr_logistic_mix: int = _M.nr_logistic_mix
    resnet_nonlinearity: str = _M.resnet_nonlinearity
    class_conditional: bool = False
    spatial_conditioning: bool = False
    energy_distance: bool = _M.energy_distance
    num_layers: int = _M.num_layers
    num_filters: int = _M.num_filters
    learning_rate: float = 0.001
    lr_decay: float = 0.999995
    batch_size: int = 16
    init_batch_size: int = 16
    dropout_p: float = _M.dropout_p
    max_epochs: int = 5000
    nr_gpu: int = 8
    polyak_decay: float = 0.9995
    polyak_warmup: bool = True
    num_samples: int = 1
    seed: int = 1
    max_steps: Optional[int] = None
    strategy: str = "mirrored"
    precision: str = "float32"
    jit_compile: bool = False
    recompute: bool = False
    sample_method: str = "fast"
    # The faster computations of pixelcnn_pp/fast_ops.py (False: the original's ops only).
    fast_ops: bool = True
    quiet: bool = False
    strict_images: bool = False
    # Background models for likelihood ratios (docs/SCORING.md); 0 = off.
    input_mutation_rate: float = 0.0
    l2_weight: float = 0.0

    def model_config(self, loader):
        """The ModelConfig of this run on the data of ``loader`` (a DataLoader): its image
        (or code map) shape, labels, number of codes and spatial maps."""
        num_labels = loader.get_num_labels()
        if self.class_conditional and not num_labels:
            raise UsageError(f"--class_conditional needs a labelled data set; "
                             f"{self.data_set!r} has no labels")
        spatial = getattr(loader, "get_spatial_shape", lambda: None)()
        if self.spatial_conditioning and not spatial:
            raise UsageError(f"--spatial_conditioning needs a data set with spatial maps; "
                             f"{self.data_set!r} has none")
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(ModelConfig)
                  if hasattr(self, f.name)}
        return ModelConfig(
            **shared, image_shape=tuple(loader.get_observation_size()),
            num_classes=num_labels if self.class_conditional else None,
            num_categories=getattr(loader, "get_num_categories", lambda: None)(),
            spatial_channels=spatial[-1] if self.spatial_conditioning else None)

    def validate(self):
        """Raise UsageError naming the flag if a value makes no sense, before anything starts
        (TensorFlow devices, data, the save_dir)."""
        for name in _POSITIVE + _NON_NEGATIVE:
            v = getattr(self, name)
            low = 1 if name in _POSITIVE else 0
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
                raise UsageError(f"--{name} must be an integer >= {low}; got {v!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, numbers.Integral)
                                           or self.max_steps < 1):
            raise UsageError(f"--max_steps must be an integer >= 1 (or unset); got "
                             f"{self.max_steps!r}")
        checks = (("learning_rate", self.learning_rate > 0, "> 0"),
                  ("lr_decay", 0 < self.lr_decay <= 1, "in (0, 1]"),
                  ("dropout_p", 0 <= self.dropout_p < 1, "in [0, 1)"),
                  ("polyak_decay", 0 <= self.polyak_decay <= 1, "in [0, 1]"),
                  ("input_mutation_rate", 0 <= self.input_mutation_rate <= 1, "in [0, 1]"),
                  ("l2_weight", self.l2_weight >= 0, ">= 0"))
        for name, ok, want in checks:
            v = getattr(self, name)
            if not (ok and math.isfinite(v)):
                raise UsageError(f"--{name} must be {want}; got {v!r}")
        if not self.save_dir:
            raise UsageError("--save_dir must name a folder")
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}; got "
                             f"{self.precision!r}")
        from pixelcnn_pp.data import check_data_set_name
        check_data_set_name(self.data_set)
        if self.recompute and self.model == "pixelcnn":
            raise UsageError("--recompute is for PixelCNN++ (its gated resnet blocks); the "
                             "PixelCNN baseline has none: drop the flag")
        if self.strict_images and self.data_set != "folder":
            raise UsageError("--strict_images is for --data_set folder (a folder of image "
                             "files)")


# TrainConfig fields that must be >= 1 / >= 0 (train.py flags of the same names).
_POSITIVE = ("batch_size", "init_batch_size", "nr_resnet", "nr_filters", "nr_logistic_mix",
             "num_layers", "num_filters", "nr_gpu", "save_interval")
_NON_NEGATIVE = ("max_epochs", "num_samples")
