# Versions of the tools the tests build, read by the Makefile (include) and by tests/machine_cache.py:
# one home for each, so the build and the tests that look for its output agree.
ACTIONLINT_VERSION := v1.7.12
