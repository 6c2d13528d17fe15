"""hmgen: the Hierarchical Multiscale LSTM (Chung, Ahn & Bengio, ICLR 2017) as a tool and a library.

Compression, as Python's lzma module offers it (hmgen.archive.api; imported on first use, so that `import hmgen`
stays light):

    hmgen.compress(data) -> bytes        hmgen.decompress(data) -> bytes        hmgen.open(path, "rb" | "wb" | "rt" ...)
"""
__version__ = "0.1.0"
__all__ = ["compress", "decompress", "open", "HmzFile", "HmgenError", "FormatError"]


def __getattr__(name: str):
    if name in ("compress", "decompress", "open", "HmzFile", "FormatError"):
        from hmgen.archive import api
        return getattr(api, name)
    if name == "HmgenError":
        from hmgen.errors import HmgenError
        return HmgenError
    raise AttributeError(f"module 'hmgen' has no attribute {name!r}")
