"""postselectd: rates photos as they arrive and writes XMP sidecars editors read."""

__version__ = "0.1.0"
