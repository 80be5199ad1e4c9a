"""Test bits/dim of a checkpoint on a data set's test split, with the Polyak-averaged weights.

    python eval.py --save_dir save                          # a run of ours (config from it)
    python eval.py --tf1_checkpoint params_cifar.ckpt --data_set cifar --data_dir ~/data \
        --nr_resnet 5 --nr_filters 160 --nr_logistic_mix 10  # the original's released one
"""

import json

from absl import app, flags

from pixelcnn_pp.evaluation import evaluate_checkpoint

F = flags.FLAGS
flags.DEFINE_string("save_dir", None, "A save_dir written by train.py")
flags.DEFINE_string("tf1_checkpoint", None, "An original TF1 checkpoint prefix instead")
flags.DEFINE_string("data_set", None, "Data set (default: the save_dir's; cifar for TF1)")
flags.DEFINE_string("data_dir", None, "Location of the data set (default: the save_dir's)")
flags.DEFINE_integer("batch_size", 16, "Evaluation batch size")
flags.DEFINE_integer("nr_resnet", 5, "TF1 checkpoint: residual blocks per stage")
flags.DEFINE_integer("nr_filters", 160, "TF1 checkpoint: filters")
flags.DEFINE_integer("nr_logistic_mix", 10, "TF1 checkpoint: logistic components")
flags.DEFINE_enum("resnet_nonlinearity", "concat_elu", ["concat_elu", "elu", "relu"],
                  "TF1 checkpoint: nonlinearity")
flags.DEFINE_boolean("raw", False, "Use the raw trained weights instead of the averages")
flags.DEFINE_integer("max_batches", None, "Evaluate only this many batches")


def main(argv):
    del argv
    result = evaluate_checkpoint(
        save_dir=F.save_dir, tf1_checkpoint=F.tf1_checkpoint, data_set=F.data_set,
        data_dir=F.data_dir, batch_size=F.batch_size, use_averages=not F.raw,
        tf1_model=dict(nr_resnet=F.nr_resnet, nr_filters=F.nr_filters,
                       nr_logistic_mix=F.nr_logistic_mix,
                       resnet_nonlinearity=F.resnet_nonlinearity),
        max_batches=F.max_batches)
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
