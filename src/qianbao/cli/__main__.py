"""`python -m qianbao.cli` runs the `qianbao` command."""

from qianbao.cli.main import main

main()
