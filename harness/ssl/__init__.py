"""The method-specific pieces of self-supervised pre-training (Tab. 9, Appendix C.2): MoCo-v3's encoders,
projector, predictor and contrastive loss (`mocov3`), DINO's head, multi-crop wrapper, centred loss and
teacher (`dino`), both methods' augmentations and the linear probe's (`augment`), and the per-iteration
schedules both official codes precompute (`schedules`). The engines in `harness.engines` run them."""
