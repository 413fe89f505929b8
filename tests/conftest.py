"""Shared test set-up: quiet, fast TensorFlow and the repository on sys.path."""
import os
import sys

# Must be set before the first TensorFlow import: oneDNN nearly doubles CPU speed here.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
