"""``python eval.py --help``: the command of pixelcnn_pp/cli/eval.py (installed also as
``pixelcnn-eval``)."""

from pixelcnn_pp.cli.eval import command

if __name__ == "__main__":
    command()
