"""The streaming pipeline: capture, synchronise, register, fuse in batches, and sink."""
