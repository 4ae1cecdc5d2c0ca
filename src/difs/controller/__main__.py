"""``python -m difs.controller`` is ``difs controller``."""

from difs.cli.main import app

app(prog_name="difs", args=["controller", *__import__("sys").argv[1:]])
