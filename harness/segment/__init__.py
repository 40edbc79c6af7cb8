"""Semantic segmentation on a SAR-ready backbone (Tab. 12): the Semantic FPN of Kirillov et al. (2019) as
PVT's code builds it on mmseg v0.13 (`fpn`), the training and test pipelines of that config (`transforms`)
and the datasets they read (`data`: ADE20K, or the synthetic objects at local scale)."""
