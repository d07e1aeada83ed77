"""Training side of tagger: datasets, architectures, fit/evaluate/export (needs torch)."""
