"""Fixtures: the first layers of the real SmolLM2 and a compress step that writes an artifact from them.

Exposed as fixtures that return the functions (as tests/quant/methods/conftest.py does), so that the test modules
need no import of this file under pytest's importlib mode.
"""

import pytest


def small_smollm2(n_layers: int):
    """The first `n_layers` layers of the real SmolLM2 (sliced from the cached full model), its ModelSpec, tokenizer."""
    import copy
    import dataclasses

    from models.smollm import load_smollm2
    from models.spec import get_model

    full, tok = load_smollm2(fresh=False)
    m = copy.deepcopy(full)
    m.blocks = m.blocks[:n_layers]
    m.cfg = dataclasses.replace(m.cfg, n_layers=n_layers)
    spec = dataclasses.replace(get_model("smollm2-135m"), num_layers=n_layers)
    return m, spec, tok


def compress_smollm2(tmp, scheme, n_layers: int, method: str = "gptq"):
    """Quantize `small_smollm2(n_layers)` with `scheme` and write the artifact to `tmp`: (artifact path, model)."""
    from quant.artifact import write_artifact
    from quant.methods.kvcache import kv_statistics
    from quant.quantize import Calibration, configs_for_scheme, quantize

    m, spec, tok = small_smollm2(n_layers)
    calib = Calibration.wiki_leads(tok, n=2, seq_len=128)
    reps = []
    for cfg in configs_for_scheme(scheme, weight_method=method):
        reps += quantize(m, cfg, calibration=calib)
    kv = kv_statistics(m, list(calib.windows), scheme)
    return write_artifact(tmp, m, spec, scheme, kv_stats=kv, calibration=calib.provenance, reports=reps), m


@pytest.fixture(name="compress_smollm2", scope="session")
def _compress_smollm2_fixture():
    return compress_smollm2
