"""``python score.py --help``: the command of pixelcnn_pp/cli/score.py (installed also as
``pixelcnn-score``)."""

from pixelcnn_pp.cli.score import command

if __name__ == "__main__":
    command()
