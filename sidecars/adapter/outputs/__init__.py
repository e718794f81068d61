"""Output plugins: what the adapter serves on its listener, built from the latest scrape and verdict.

Built in: `health` (/healthz, /<group>z, /healthz/<check>), `json` (/metrics.json) and `prometheus`
(/metrics, filtered and relabelled). Others install under the entry-point group
`sidecars.adapter.outputs` and are named in the `outputs` option.
"""

from sidecars.adapter.outputs.base import Output, load_output

__all__ = ["Output", "load_output"]
