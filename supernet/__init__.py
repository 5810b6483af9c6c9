"""The weights: static deployable models, the weight-sharing supernets, BN folding.

    net = supernet.build_supernet(space); net.set_active(arch); y = net(x)
    model = net.extract(arch)             # plain nn.Module, same outputs
    model = supernet.build_model(arch)    # same structure, fresh init (timm's model API)
    backbone = supernet.build_model(arch, features_only=True)   # stage outputs at strides 4/8/16/32
    block = supernet.build_block(spec)    # one static block (what latency tables measure)
    supernet.fuse_for_deploy(model)       # fold BatchNorms

A model family plugs in with `register_family(Family subclass instance)` (the torch side of a
`search_spaces` space); Next-ViT and EfficientFormerV2 register themselves on import.
"""
from .family import (CheckpointLayout, Family, KeyPair, family_of_kind, get_family, list_families,
                     register_family, unregister_family)
from .model import (DeployModel, FeatureInfo, Model, ModelError, block_input_shape, build_block, build_model,
                    drop_path_rates, fuse_for_deploy, zero_init_residual)
from .sharing import Supernet, build_supernet, first_k
from . import nextvit as _nextvit  # noqa: F401  (registers the family)
from . import efficientformerv2 as _efficientformerv2  # noqa: F401

__all__ = ["CheckpointLayout", "DeployModel", "Family", "FeatureInfo", "KeyPair", "Model", "ModelError", "Supernet",
           "block_input_shape",
           "build_block", "build_model", "build_supernet", "drop_path_rates", "family_of_kind", "first_k",
           "fuse_for_deploy", "get_family", "list_families", "register_family", "unregister_family",
           "zero_init_residual"]
