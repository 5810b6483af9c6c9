"""The weights: static deployable models, the weight-sharing supernets, BN folding.

    net = supernet.build_supernet(space); net.set_active(arch); y = net(x)
    model = net.extract(arch)             # plain nn.Module, same outputs
    model = supernet.build_model(arch)    # same structure, fresh init
    block = supernet.build_block(spec)    # one static block (what latency tables measure)
    supernet.fuse_for_deploy(model)       # fold BatchNorms
"""
from .model import (DeployModel, Model, block_input_shape, build_block, build_model,
                    drop_path_rates, fuse_for_deploy)
from .sharing import Supernet, build_supernet, first_k

__all__ = ["DeployModel", "Model", "Supernet", "block_input_shape", "build_block", "build_model",
           "build_supernet", "drop_path_rates", "first_k", "fuse_for_deploy"]
