"""Precision Guard: model / VAE clones whose dtype errors are explained on the core node that ran them."""
