"""The streaming pipeline: capture, synchronise, register, fuse in batches, and sink.

Entry points (imported from their modules, so ``import pipeline`` stays light):

- ``pipeline.config.load_pipeline_config(path, overrides) -> PipelineConfig``
- ``pipeline.runner.run_pipeline(config, fuser=None, *, extra_sinks=(), open_capture=None) -> RunSummary``;
  ``config`` is a ``PipelineConfig``, the same as a dict, or a YAML file's path
- ``pipeline.fused_frames(config, fuser=None)``: iterate over fused frames as tensors on the
  fusion device, in this process (``pipeline.runner.fused_frames``)
- ``pipeline.subscriber.Subscriber``: read the ZeroMQ stream in another process
- ``ldfusion run CONFIG`` (``pipeline.cli``) and ``ldfusion subscribe`` (``pipeline.subscriber``)

One module per stage: ``sources`` -> ``sync`` -> ``registration`` -> ``fusion_worker`` ->
``sinks``, joined by the bounded queues of ``queues``; ``frames`` holds the records that
travel between them and ``stats`` counts what passes.
"""


def fused_frames(config, fuser=None, **options):
    """``pipeline.runner.fused_frames``: fused frames as tensors on the fusion device (see there)."""
    from pipeline.runner import fused_frames as run_frames  # late: keeps `import pipeline` light

    return run_frames(config, fuser, **options)
