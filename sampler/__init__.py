"""The NVML GPU sampler behind ``runlytics sample``.

``nvml`` is the only module that calls NVML (through ``pynvml``, from the ``nvidia-ml-py``
package); ``devices`` picks the GPUs and MIG instances to sample and finds them by index and
UUID; ``spool`` writes the JSON Lines spool of ``shared/spec/inputs.md`` section 2; ``loop`` is
the sampling loop. docs/sampler.md is the user's guide.
"""
