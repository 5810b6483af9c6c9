"""Low-level conversion primitives: a torch module to ONNX, Core ML (ML Program) or a TensorRT engine.

Each function takes a plain (already BN-folded, or folded on request) `nn.Module` and an input
shape and writes one file; the extract app and the latency backends build on them.
"""
