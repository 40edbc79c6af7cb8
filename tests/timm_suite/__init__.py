"""timm's own model tests (tests/test_models.py of timm 1.0.31), run on the SAR models: see README.md."""
