import pytest

from base.errors import SpecError
from quant.methods import A8Config, GPTQConfig, KV4Config, KVBitmapConfig, LambdaConfig, RTNConfig, WandaConfig
from quant.quantize import configs_for_scheme, quantize, register, registered_configs
from quant.scheme import CompressionScheme, get_scheme


def test_every_method_registered():
    regs = set(registered_configs())
    for c in (A8Config, GPTQConfig, KV4Config, KVBitmapConfig, LambdaConfig, RTNConfig, WandaConfig, CompressionScheme):
        assert c in regs


def test_unknown_config_type():
    with pytest.raises(SpecError, match="no quantization method"):
        quantize(object(), {"bits": 2})


def test_double_registration_refused():
    with pytest.raises(SpecError, match="already"):
        register(RTNConfig)(lambda m, c, cal: {})


def test_accllm_expansion():
    cfgs = configs_for_scheme(get_scheme("accllm"))
    assert [type(c) for c in cfgs] == [GPTQConfig, A8Config, KV4Config, LambdaConfig]
    g = cfgs[0]
    assert (g.bits, g.group_size, g.pruning) == (2, 64, "2:4")
    assert (cfgs[2].bits, cfgs[2].dense_recent) == (4, 32)
    assert (cfgs[3].sink, cfgs[3].window) == (4, 2048)
    rtn = configs_for_scheme(get_scheme("accllm"), weight_method="rtn")
    assert [type(c) for c in rtn[:2]] == [WandaConfig, RTNConfig]
    assert configs_for_scheme(get_scheme("fp16")) == []
    assert [type(c) for c in configs_for_scheme(get_scheme("mustafar70"))] == [KVBitmapConfig]
    with pytest.raises(SpecError, match="weight_method"):
        configs_for_scheme(get_scheme("fp16"), weight_method="awq")
