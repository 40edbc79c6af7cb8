"""timm entry points for models made by `sar.attach`, registered for the vendored suite only.

timm's tests build every model with `timm.create_model(name, **kwargs)`: `sar_attach_<timm name>` builds
timm's model `<timm name>` with those arguments and returns `sar.attach(model)` (the SAR last block,
`last_block="sar"`); with `features_only=True` it returns timm's FeatureGetterNet over the attached model,
as timm wraps its own ViTs (`feature_cls='getter'`). One model per family and option `sar.attach` handles
differently: plain ViT, layer scale with a patch-only position table (DeiT-III), a distillation token,
EVA-02 (rotary embedding, SwiGLU) and BEiT (relative position bias).
"""

from collections.abc import Callable
from typing import Any

import timm
from timm.models import PretrainedCfg, generate_default_cfgs, register_model
from timm.models._features import FeatureGetterNet  # timm 1.0 exports no public name for it
from torch import nn

import sar

BASES = (
    "vit_small_patch16_224",
    "deit3_small_patch16_224",
    "deit_tiny_distilled_patch16_224",
    "eva02_tiny_patch14_224",
    "beit_base_patch16_224",
)
PREFIX = "sar_attach_"
DEFAULT_OUT_INDICES = 3  # timm's ViT, EVA and BEiT: features_only takes the last three blocks


def _entrypoint(base: str) -> Callable[..., nn.Module]:
    def create(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        features_only = kwargs.pop("features_only", False)
        if not features_only:
            return sar.attach(timm.create_model(base, pretrained=pretrained, **kwargs))
        feature_cls = kwargs.pop("feature_cls", "getter")
        if feature_cls != "getter":
            raise ValueError(f"{PREFIX}{base}: features_only takes feature_cls='getter', got {feature_cls!r}")
        out_indices = kwargs.pop("out_indices", DEFAULT_OUT_INDICES)
        model = sar.attach(timm.create_model(base, pretrained=pretrained, **kwargs))
        net = FeatureGetterNet(model, out_indices=out_indices)
        classifier = ("num_classes", "classifier", "global_pool")  # what timm drops for a feature net
        net.pretrained_cfg = net.default_cfg = {
            key: value for key, value in model.pretrained_cfg.items() if key not in classifier
        }
        return net

    create.__name__ = create.__qualname__ = PREFIX + base
    create.__module__ = __name__
    create.__doc__ = f"timm's {base} with SAR attached (`sar.attach`, last_block='sar')."
    return create


def _cfg(base: str) -> PretrainedCfg:
    """The base model's config without its weights' source: timm knows the attached model's sizes
    (`list_models(name_matches_cfg=True)`, which timm's backward tests select by), no weights for it."""
    cfg = timm.get_pretrained_cfg(base)
    kept = ("input_size", "fixed_input_size", "min_input_size", "interpolation", "crop_pct", "mean", "std")
    kept += ("num_classes", "pool_size", "first_conv", "classifier")
    return PretrainedCfg(**{key: getattr(cfg, key) for key in kept})


default_cfgs = generate_default_cfgs({PREFIX + base: _cfg(base) for base in BASES})  # read by register_model
ENTRYPOINTS = {PREFIX + base: register_model(_entrypoint(base)) for base in BASES}
