"""Applications behind the CLI: each module is one command and calls the library.

`demo` (``mlip-attn demo``), `bench` (``mlip-attn bench``: speed and memory), `peers`
(``mlip-attn bench --peers``; the models in `peer_models`), `roofline` (``mlip-attn bench
--roofline``), `load_bench` (``mlip-attn bench --under-load``), `lammps_bench`
(``mlip-attn bench --lammps``), `longrange`
(``mlip-attn benchmark longrange``: accuracy of local against global models), `study`
(``mlip-attn study``: message passing ± encoders ± global attention on graph-level properties).
"""
