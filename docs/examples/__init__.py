"""The Python walkthroughs of docs/api.md (tests/api/test_docs_examples.py runs them)."""
