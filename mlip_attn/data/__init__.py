"""Data containers, readers/writers, neighbour lists and dataset statistics."""
from .atomic_data import AtomicData, Batch, StructureError
from .io import DataFileError, read_structures, write_structures
from .labels import LabelKeys
from .neighbours import neighbour_list

__all__ = ["AtomicData", "Batch", "StructureError", "DataFileError", "LabelKeys",
           "read_structures", "write_structures", "neighbour_list"]
