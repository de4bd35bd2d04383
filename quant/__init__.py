"""Compression: schemes and their byte costs, packed formats, reference kernels, quantization methods, artifacts."""

from quant.scheme import PRESETS, CompressionScheme, WeightBytes, get_scheme, list_schemes

__all__ = ["CompressionScheme", "WeightBytes", "PRESETS", "get_scheme", "list_schemes"]
