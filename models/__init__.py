"""Model architectures: ModelSpec registry (YAML per model, or any HF config.json)."""

from models.spec import LinearShape, ModelSpec, get_model, list_models, model_from_hf_config

__all__ = ["ModelSpec", "LinearShape", "get_model", "list_models", "model_from_hf_config"]
