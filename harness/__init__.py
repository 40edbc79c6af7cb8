"""The reproduction harness: recipe -> validated runs -> submitit jobs -> trained, logged, resumable runs."""
