"""Applications behind the CLI: each module is one command and calls the library.

`demo` (``mlip-attn demo``), `bench` (``mlip-attn bench``: speed and memory), `peers`
(``mlip-attn bench --peers``), `lammps_bench` (``mlip-attn bench --lammps``), `longrange`
(``mlip-attn benchmark longrange``: accuracy of local against global models), `study`
(``mlip-attn study``: message passing ± encoders ± global attention on graph-level properties).
"""
