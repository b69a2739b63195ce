"""qianbao: an open-source digital wallet platform."""

__version__ = "0.1.0"
