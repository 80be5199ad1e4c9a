"""The model-size flags every benchmark takes (default: the full CIFAR-10 model, 32x32,
batch 16)."""

from absl import flags


def define_model_flags(nr_resnet=5, nr_filters=160, nr_logistic_mix=10, image_size=32,
                       batch_size=16, batch_help="Images per step"):
    """--nr_resnet, --nr_filters, --nr_logistic_mix, and --image_size / --batch_size unless
    their default is None (a benchmark that takes its own)."""
    flags.DEFINE_integer("nr_resnet", nr_resnet, "Residual blocks per stage")
    flags.DEFINE_integer("nr_filters", nr_filters, "Filters")
    flags.DEFINE_integer("nr_logistic_mix", nr_logistic_mix, "Logistic mixture components")
    if image_size is not None:
        flags.DEFINE_integer("image_size", image_size, "Image height and width")
    if batch_size is not None:
        flags.DEFINE_integer("batch_size", batch_size, batch_help)
