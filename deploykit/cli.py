"""`deploykit` console script: the same tasks without a tasks.py."""
from invoke import Program

from . import __version__
from .tasks import ns

program = Program(namespace=ns, name="deploykit", binary="deploykit", version=__version__)


def main():
    program.run()


if __name__ == "__main__":
    main()
