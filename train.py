"""``python train.py --help``: the command of pixelcnn_pp/cli/train.py (installed also as
``pixelcnn-train``)."""

from pixelcnn_pp.cli.train import main

if __name__ == "__main__":
    main()
