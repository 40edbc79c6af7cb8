"""What every engine shares, written once: RNG state and seeding, data loaders whose numbers do not depend
on the worker count, checkpoints (atomic, resumable, refusing weights that do not fit), the precision mode,
learning-rate schedules, the metrics log with its TensorBoard twin, training steps that never wait for the
device, and the job wrapper (lock, failure files, provenance)."""
