"""Safe VAE Decode: decoding under the context, per-item NaN retry, memory budget and tiles."""
