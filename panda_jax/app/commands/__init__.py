"""One module per command; each defines ``add_parser(subparsers)`` and ``run(args) -> int``.

``COMMANDS`` lists them in the order ``panda-jax --help`` shows them.
"""

COMMANDS = ("convert", "fit", "refine", "edit", "saliency", "demo", "serve")
