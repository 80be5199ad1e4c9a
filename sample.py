"""``python sample.py --help``: the command of pixelcnn_pp/cli/sample.py (installed also as
``pixelcnn-sample``)."""

from pixelcnn_pp.cli.sample import command

if __name__ == "__main__":
    command()
