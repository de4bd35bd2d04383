"""Compression methods: one config dataclass + one handler each, registered with quant.quantize.register."""

from quant.methods.act8 import A8Config
from quant.methods.gptq import GPTQConfig
from quant.methods.kvcache import KV4Config, KVBitmapConfig, KVCodec
from quant.methods.lambda_attn import LambdaConfig, LambdaMask
from quant.methods.prune import WandaConfig
from quant.methods.qat import QATConfig
from quant.methods.rtn import RTNConfig

__all__ = [
    "A8Config",
    "GPTQConfig",
    "KV4Config",
    "KVBitmapConfig",
    "KVCodec",
    "LambdaConfig",
    "LambdaMask",
    "QATConfig",
    "RTNConfig",
    "WandaConfig",
]
