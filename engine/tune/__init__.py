"""Tuning a collection on its user's own labelled data (stage 1: a head on frozen vectors)."""
