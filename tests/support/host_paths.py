"""The host's paths and model bootstrap, for the tests: they live in scripts/comfy_client.py (shared with the
scripts) and are re-exported here under the names the tests import."""
from comfy_client import (CHECKPOINT, COMFY_DIR, OVERFLOW_VAE, ROOT, TAESD, ensure_models,  # noqa: F401
                          link_testing_nodes, unlink_testing_nodes)
