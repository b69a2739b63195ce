"""The `qianbao` command."""
