"""Shipped models: installed as the package `tagger.exports`, found by `tagger.model`."""
