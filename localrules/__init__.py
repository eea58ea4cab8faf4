"""localrules: tree-structured TPE searches over the metaparameters of local learning rules.

Reproduces and extends the system of Kunin et al., "Two Routes to Scalable Credit Assignment
without Weight Symmetry" (ICML 2020). Importing this package imports nothing heavy: TensorFlow
is loaded only by the modules that build or train networks.
"""

__version__ = "0.1.0"
