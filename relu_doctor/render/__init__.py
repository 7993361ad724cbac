"""Renderers: a report in, text out. They never compute a metric."""
