"""Lets the tests here import migration_util (the helpers they share) by name."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
