"""Per-atom input encoders (the encoder study, arXiv 2510.05583): chemical descriptors,
bond-graph topology and Laplacian positional encodings.

Each module registers one encoder in `mlip_attn.registry.ENCODERS` (contract:
`mlip_attn.encoders.base.Encoder`); ``model.encoders: [chemical, topological, laplacian]``
adds their features, projected into the backbone's width by a zero-initialised linear map, to
the initial per-atom embedding of any backbone (`mlip_attn.encoders.stack.EncoderStack`).
"""
