"""Serving-engine integrations. Each subpackage imports its engine; importing
``kvdist`` or this package imports none of them."""
