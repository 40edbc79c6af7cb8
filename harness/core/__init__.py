"""What every engine shares, written once: RNG state and seeding, data loaders whose numbers do not depend
on the worker count, checkpoints (atomic, refusing weights that do not fit, an upstream run's loaded by
`checkpoint.load_upstream`), a run's checkpoint parts named once for saving and resuming (`resume`), the
model wrapped in DDP (`model.parallel`), the precision mode, learning-rate schedules, the metrics log with
its TensorBoard twin, training steps that never wait for the device, the typed, versioned result
(`result`), and the job wrapper (lock, failure files, result.json)."""
