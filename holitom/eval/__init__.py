"""Fidelity evaluation: a generated video-QA benchmark and the accuracy of each merge method on it.

``holitom.eval.videoqa`` generates the items (numpy only); ``holitom eval`` runs them.
"""
