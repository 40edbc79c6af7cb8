"""Device kernels behind `sar.connected_components` and `sar.spatial_entropy`.

`numba_cpu` (CPU, parallel over maps) and `triton_gpu` (one Triton program per map) implement the same two
operations with the same results: 8-connected labeling, and the fused spatial entropy with its gradient.
"""
